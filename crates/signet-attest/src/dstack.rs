//! TDX quotes from the dstack guest agent (Phala dstack CVMs): `POST /GetQuote` with
//! `{"report_data": "<hex>"}` on its unix socket (default `/var/run/dstack.sock`), answered
//! with `{"quote": "<hex>", "event_log": "…", "vm_config": "…"}`. The agent serializes quote
//! requests itself. The event log is passed on in the report, since verifiers replay it
//! against the quote's RTMRs.

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
}

#[derive(serde::Deserialize)]
struct GetQuoteAnswer {
    quote: String,
    #[serde(default)]
    event_log: Option<String>,
}

impl DstackAgent {
    /// Checks that the socket exists; a missing agent is an error that says so.
    pub fn open(socket: &Path) -> Result<Self, AttestationError> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(socket) {
            Ok(meta) if meta.file_type().is_socket() => Ok(Self {
                socket: socket.to_owned(),
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

    async fn get_quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
        let failed = |what: String| AttestationError::Provider(format!("dstack agent: {what}"));
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| failed(format!("connect {}: {e}", self.socket.display())))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(format!("handshake: {e}")))?;
        let driver = tokio::spawn(connection);
        let body = serde_json::json!({ "report_data": hex::encode(report_data) }).to_string();
        let request = http::Request::post("/GetQuote")
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
        let answer: GetQuoteAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("unexpected answer: {e}")))?;
        let quote = hex::decode(answer.quote.trim().trim_start_matches("0x"))
            .map_err(|_| failed("the quote is not hex".to_owned()))?;
        Ok(ProvidedQuote {
            bytes: quote,
            event_log: answer.event_log,
        })
    }
}

#[async_trait]
impl QuoteProvider for DstackAgent {
    fn mode(&self) -> AttestationMode {
        AttestationMode::Dstack
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
        self.get_quote(report_data).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DevQuoteProvider, check_quote_binding};
    use hyper::service::service_fn;
    use std::sync::Arc;

    /// A dstack agent on a unix socket: answers /GetQuote with a mock quote over exactly the
    /// requested report data.
    async fn fake_agent(dir: &Path, answer_status: u16) -> PathBuf {
        let path = dir.join("dstack.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let quotes = Arc::new(DevQuoteProvider::generate());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let quotes = quotes.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let quotes = quotes.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/GetQuote");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let data: [u8; 64] = hex::decode(json["report_data"].as_str().unwrap())
                                .unwrap()
                                .try_into()
                                .unwrap();
                            let answer = serde_json::json!({
                                "quote": hex::encode(quotes.mock_quote(&data)),
                                "event_log": "[{\"imr\":3,\"event\":\"app-id\"}]",
                                "vm_config": "{}",
                            });
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(answer_status)
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

    #[tokio::test]
    async fn quotes_come_back_bound_with_their_event_log() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_agent(dir.path(), 200).await;
        let agent = DstackAgent::open(&socket).unwrap();
        let quote = agent.quote(&[4; 64]).await.unwrap();
        check_quote_binding(&quote.bytes, &[4; 64]).unwrap();
        assert!(quote.event_log.unwrap().contains("app-id"));
    }

    #[tokio::test]
    async fn agent_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_agent(dir.path(), 500).await;
        let agent = DstackAgent::open(&socket).unwrap();
        let err = agent.quote(&[4; 64]).await.unwrap_err();
        assert!(err.to_string().contains("500"), "{err}");
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
