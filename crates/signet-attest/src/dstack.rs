//! TDX quotes from the dstack guest agent (Phala dstack CVMs), on its unix socket (default
//! `/var/run/dstack.sock`), through the agent's JSON RPC (`agent_rpc.proto`, service
//! `DstackGuest`):
//!
//! - `POST /GetQuote` with `{"report_data": "<hex>"}`, answered with `{"quote": "<hex>",
//!   "event_log": "<JSON text>", "vm_config": "<JSON text>", …}`. The agent serializes quote
//!   requests itself.
//! - `POST /Info` with `{}`, answered with the application's description: `app_id`,
//!   `tcb_info` (JSON text holding `app_compose`, the measurements and the boot event log),
//!   `compose_hash`, `vm_config`, `os_image_hash`, ….
//! - `POST /GetKey` with `{"path": …, "purpose": …}`, answered with `{"key": "<hex>",
//!   "signature_chain": ["<hex>", …]}`: a secp256k1 key the KMS derives for this application
//!   and path (the same on every instance of the application, across restarts), and the
//!   chain that proves it (the application key's signature over `purpose:<the derived
//!   key's compressed public key in hex>`, then the KMS root's over the application key).
//!   signet asks for it once per key role at start ([`DstackAgent::get_key`]); the key never
//!   leaves a zeroizing buffer and is never formatted.
//!
//! All three are passed on in the report as the agent gave them: verifiers replay
//! `event_log` into RTMR3, check sha256(`info.tcb_info.app_compose`) against the quote's
//! MRCONFIGID and `info.compose_hash`, and hand `vm_config` to dstack's verifier. `Info`
//! describes the deployment, not one quote, so it is asked for once and kept; if the agent
//! cannot answer it, reports go out without `info` (the quote alone still binds the key) and
//! the next report asks again.

use super::{AttestationError, ProvidedQuote, QuoteProvider};
use crate::settings::AttestationMode;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Largest agent answer read (a quote with its event log is tens of KiB).
const MAX_ANSWER: usize = 4 << 20;

/// Client of the dstack agent socket.
#[derive(Debug)]
pub struct DstackAgent {
    socket: PathBuf,
    info: tokio::sync::OnceCell<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct GetQuoteAnswer {
    quote: String,
    #[serde(default)]
    event_log: Option<String>,
    #[serde(default)]
    vm_config: Option<String>,
}

#[derive(serde::Deserialize)]
struct GetKeyAnswer {
    key: String,
    #[serde(default)]
    signature_chain: Vec<String>,
}

/// A key the dstack KMS derived for this application (`GetKey`).
pub struct DerivedKey {
    /// The 32-byte secp256k1 secret key.
    pub secret: Zeroizing<[u8; 32]>,
    /// The signature chain the agent gave with it, as it gave it (hex strings).
    pub signature_chain: Vec<String>,
}

impl std::fmt::Debug for DerivedKey {
    // The chain is public; the secret never reaches a formatter.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedKey")
            .field("signature_chain", &self.signature_chain)
            .finish_non_exhaustive()
    }
}

/// `None` for an absent or empty text field (the agent sends `""` for what it lacks).
fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

impl DstackAgent {
    /// Checks that the socket exists; a missing agent is an error that says so.
    pub fn open(socket: &Path) -> Result<Self, AttestationError> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(socket) {
            Ok(meta) if meta.file_type().is_socket() => Ok(Self {
                socket: socket.to_owned(),
                info: tokio::sync::OnceCell::new(),
            }),
            Ok(_) => Err(AttestationError::Unavailable(format!(
                "{} is not a unix socket: attestation mode dstack needs the dstack agent's socket",
                socket.display()
            ))),
            Err(e) => Err(AttestationError::Unavailable(format!(
                "dstack agent socket {}: {e}: attestation mode dstack needs a dstack CVM \
                 (or set signet.attestation.dstack_socket)",
                socket.display()
            ))),
        }
    }

    /// One RPC: `POST /{method}` with a JSON body; the answer's body when it is a 2xx.
    async fn call(&self, method: &str, body: String) -> Result<Bytes, AttestationError> {
        let failed =
            |what: String| AttestationError::Provider(format!("dstack agent {method}: {what}"));
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| failed(format!("connect {}: {e}", self.socket.display())))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(format!("handshake: {e}")))?;
        let driver = tokio::spawn(connection);
        let request = http::Request::post(format!("/{method}"))
            .header(http::header::HOST, "dstack")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(format!("request: {e}")))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(failed(format!("answered {status}")));
        }
        Ok(bytes)
    }

    /// `GetKey`: the key the KMS derives for this application at `path`, for `purpose`
    /// (which the chain's first signature covers).
    pub async fn get_key(&self, path: &str, purpose: &str) -> Result<DerivedKey, AttestationError> {
        let body = serde_json::json!({ "path": path, "purpose": purpose }).to_string();
        let bytes = Zeroizing::new(self.call("GetKey", body).await?.to_vec());
        let failed = |what: &str| {
            AttestationError::Provider(format!("dstack agent GetKey (path {path}): {what}"))
        };
        // Never the serde error's text: it could quote the key.
        let answer: GetKeyAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| failed("the answer is not {\"key\": hex, \"signature_chain\": [hex]}"))?;
        let key = Zeroizing::new(answer.key);
        let text = key.trim().trim_start_matches("0x");
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, secret.as_mut())
            .map_err(|_| failed("the key is not 32 bytes of hex"))?;
        if secret.iter().all(|&b| b == 0) {
            return Err(failed("the key is all zero"));
        }
        if answer.signature_chain.is_empty() {
            return Err(failed(
                "no signature chain: the key's custody could not be shown",
            ));
        }
        Ok(DerivedKey {
            secret,
            signature_chain: answer.signature_chain,
        })
    }

    async fn get_quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
        let body = serde_json::json!({ "report_data": hex::encode(report_data) }).to_string();
        let bytes = self.call("GetQuote", body).await?;
        let failed =
            |what: &str| AttestationError::Provider(format!("dstack agent GetQuote: {what}"));
        let answer: GetQuoteAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| failed(&format!("unexpected answer: {e}")))?;
        let quote = hex::decode(answer.quote.trim().trim_start_matches("0x"))
            .map_err(|_| failed("the quote is not hex"))?;
        Ok(ProvidedQuote {
            bytes: quote,
            event_log: answer.event_log,
            vm_config: non_empty(answer.vm_config),
            info: None,
        })
    }

    async fn fetch_info(&self) -> Result<serde_json::Value, AttestationError> {
        let bytes = self.call("Info", "{}".to_owned()).await?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(info @ serde_json::Value::Object(_)) => Ok(info),
            Ok(_) => Err(AttestationError::Provider(
                "dstack agent Info: the answer is not a JSON object".to_owned(),
            )),
            Err(e) => Err(AttestationError::Provider(format!(
                "dstack agent Info: unexpected answer: {e}"
            ))),
        }
    }

    /// The agent's `Info`, asked for once; `None` (with a warning) while the agent cannot
    /// give it.
    async fn info(&self) -> Option<serde_json::Value> {
        match self.info.get_or_try_init(|| self.fetch_info()).await {
            Ok(info) => Some(info.clone()),
            Err(e) => {
                log::warn!("{e}; this report goes out without `info`");
                None
            }
        }
    }
}

#[async_trait]
impl QuoteProvider for DstackAgent {
    fn mode(&self) -> AttestationMode {
        AttestationMode::Dstack
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
        let (quote, info) = tokio::join!(self.get_quote(report_data), self.info());
        let mut quote = quote?;
        quote.info = info;
        Ok(quote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DevQuoteProvider, check_quote_binding};
    use hyper::service::service_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How the fake agent behaves.
    #[derive(Clone)]
    struct Script {
        /// Status of /GetQuote answers.
        quote_status: u16,
        /// Status of /Info answers.
        info_status: u16,
        /// How many /Info calls it received.
        info_calls: Arc<AtomicUsize>,
    }

    fn info() -> serde_json::Value {
        serde_json::json!({
            "app_id": "ab".repeat(20),
            "tcb_info": "{\"app_compose\":\"{\\\"docker_compose_file\\\":\\\"x\\\"}\"}",
            "compose_hash": "cd".repeat(32),
            "vm_config": "{\"cpu_count\":2}",
        })
    }

    /// A dstack agent on a unix socket: answers /GetQuote with a mock quote over exactly the
    /// requested report data, and /Info with [`info`].
    async fn fake_agent(dir: &Path, script: Script) -> PathBuf {
        let path = dir.join("dstack.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let quotes = Arc::new(DevQuoteProvider::generate());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let quotes = quotes.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let quotes = quotes.clone();
                        let script = script.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let (status, answer) = match path.as_str() {
                                "/GetQuote" => {
                                    let data: [u8; 64] =
                                        hex::decode(json["report_data"].as_str().unwrap())
                                            .unwrap()
                                            .try_into()
                                            .unwrap();
                                    let answer = serde_json::json!({
                                        "quote": hex::encode(quotes.mock_quote(&data)),
                                        "event_log": "[{\"imr\":3,\"event\":\"app-id\"}]",
                                        "report_data": hex::encode(data),
                                        "vm_config": "{\"cpu_count\":2}",
                                    });
                                    (script.quote_status, answer)
                                }
                                "/GetKey" => {
                                    // Deterministic per path, as the KMS is per application.
                                    use sha2::Digest;
                                    let path = json["path"].as_str().unwrap();
                                    let purpose = json["purpose"].as_str().unwrap();
                                    let key = sha2::Sha256::digest(path.as_bytes());
                                    let answer = serde_json::json!({
                                        "key": hex::encode(key),
                                        "signature_chain": [hex::encode(purpose), "ab".repeat(65)],
                                    });
                                    (script.quote_status, answer)
                                }
                                "/Info" => {
                                    assert_eq!(json, serde_json::json!({}));
                                    script.info_calls.fetch_add(1, Ordering::SeqCst);
                                    (script.info_status, info())
                                }
                                _ => (404, serde_json::json!({})),
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(answer.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        path
    }

    fn script(quote_status: u16, info_status: u16) -> Script {
        Script {
            quote_status,
            info_status,
            info_calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    #[tokio::test]
    async fn quotes_come_back_bound_with_event_log_vm_config_and_info() {
        let dir = tempfile::tempdir().unwrap();
        let script = script(200, 200);
        let socket = fake_agent(dir.path(), script.clone()).await;
        let agent = DstackAgent::open(&socket).unwrap();
        let quote = agent.quote(&[4; 64]).await.unwrap();
        check_quote_binding(&quote.bytes, &[4; 64]).unwrap();
        assert!(quote.event_log.unwrap().contains("app-id"));
        assert_eq!(quote.vm_config.as_deref(), Some("{\"cpu_count\":2}"));
        assert_eq!(quote.info, Some(info()));
        // Info describes the deployment: asked for once.
        agent.quote(&[5; 64]).await.unwrap();
        assert_eq!(script.info_calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn without_info_the_quote_still_comes_and_info_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let script = script(200, 500);
        let socket = fake_agent(dir.path(), script.clone()).await;
        let agent = DstackAgent::open(&socket).unwrap();
        let quote = agent.quote(&[4; 64]).await.unwrap();
        check_quote_binding(&quote.bytes, &[4; 64]).unwrap();
        assert_eq!(quote.info, None);
        agent.quote(&[4; 64]).await.unwrap();
        assert_eq!(script.info_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn agent_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_agent(dir.path(), script(500, 200)).await;
        let agent = DstackAgent::open(&socket).unwrap();
        let err = agent.quote(&[4; 64]).await.unwrap_err();
        assert!(err.to_string().contains("GetQuote"), "{err}");
        assert!(err.to_string().contains("500"), "{err}");
    }

    #[tokio::test]
    async fn keys_come_per_path_with_their_chain() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_agent(dir.path(), script(200, 200)).await;
        let agent = DstackAgent::open(&socket).unwrap();
        let key = agent.get_key("signet/a", "signet:a").await.unwrap();
        let expected: [u8; 32] = sha2::Sha256::digest(b"signet/a").into();
        assert_eq!(*key.secret, expected);
        assert_eq!(key.signature_chain[0], hex::encode("signet:a"));
        assert!(!format!("{key:?}").contains(&hex::encode(expected)));
        let other = agent.get_key("signet/b", "signet:b").await.unwrap();
        assert_ne!(*other.secret, *key.secret);

        std::fs::create_dir(dir.path().join("failing")).unwrap();
        let failing = fake_agent(&dir.path().join("failing"), script(500, 200)).await;
        let err = DstackAgent::open(&failing)
            .unwrap()
            .get_key("signet/a", "signet:a")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("GetKey"), "{err}");
    }

    #[test]
    fn empty_text_fields_are_absent() {
        assert_eq!(non_empty(Some(String::new())), None);
        assert_eq!(non_empty(Some(" ".to_owned())), None);
        assert_eq!(non_empty(None), None);
        assert_eq!(non_empty(Some("{}".to_owned())), Some("{}".to_owned()));
    }

    #[test]
    fn a_missing_socket_is_refused() {
        let err = DstackAgent::open(Path::new("/nonexistent/dstack.sock")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dstack.sock"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err = DstackAgent::open(&file).unwrap_err();
        assert!(err.to_string().contains("not a unix socket"), "{err}");
    }
}
