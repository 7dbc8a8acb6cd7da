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
