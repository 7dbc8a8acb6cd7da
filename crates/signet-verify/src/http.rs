//! The verifier's HTTP client: HTTP/1.1 over TCP or TLS (rustls), one connection per
//! request, returning the exact body bytes received (after de-chunking) and, over TLS, the
//! SubjectPublicKeyInfo of the certificate the server presented in this very handshake.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not usable.
    #[error("bad URL {0}")]
    Url(String),
    /// TCP or TLS could not be established.
    #[error("cannot connect to {0}")]
    Connect(String),
    /// The exchange broke.
    #[error("HTTP exchange failed: {0}")]
    Exchange(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The response body is longer than allowed.
    #[error("the response body exceeds {0} bytes")]
    TooLarge(usize),
    /// The CA file could not be used.
    #[error("CA certificates: {0}")]
    Ca(String),
}

/// A parsed base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https`?
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses `http(s)://host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let uri: http::Uri = url
            .trim()
            .parse()
            .map_err(|_| HttpError::Url(url.to_owned()))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(HttpError::Url(format!(
                    "{url}: scheme must be http or https"
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| HttpError::Url(format!("{url}: no host")))?;
        Ok(Self {
            tls,
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The body exactly as received (de-chunked).
    pub body: Bytes,
    /// sha256 of the DER SubjectPublicKeyInfo of the server's certificate (TLS only).
    pub peer_spki_sha256: Option<[u8; 32]>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("response is not JSON: {e}"))
    }

    /// The JSON body of a 200 answer; any other status is an error naming it and the body.
    pub fn json_if_ok(&self) -> Result<serde_json::Value, String> {
        if self.status == 200 {
            self.json()
        } else {
            Err(format!(
                "HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        }
    }
}

/// HTTP client for one gateway.
#[derive(Clone)]
pub struct Client {
    base: BaseUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    max_body: Option<usize>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

pub use signet_core::report::spki_sha256_of_cert;

/// A TLS client configuration trusting the system roots plus `extra_ca_pem`.
pub fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(native) = rustls_native_certs::load_native_certs() {
        for cert in native {
            let _ = roots.add(cert);
        }
    }
    if let Some(pem) = extra_ca_pem {
        let mut reader = std::io::BufReader::new(pem);
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| HttpError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| HttpError::Ca(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(HttpError::Ca("no certificate in the file".to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Client {
    /// A client for `base`; `tls` is needed for https URLs.
    pub fn new(base: BaseUrl, tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Self {
        Self {
            base,
            tls,
            timeout,
            max_body: None,
        }
    }

    /// Refuses response bodies longer than `max_body` bytes.
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = Some(max_body);
        self
    }

    /// The base URL.
    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// Sends one request on a fresh connection.
    pub async fn send(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, HttpError> {
        tokio::time::timeout(
            self.timeout,
            self.send_inner(method, path_and_query, headers, body),
        )
        .await
        .map_err(|_| HttpError::Timeout(self.timeout))?
    }

    async fn send_inner(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, HttpError> {
        let authority = self.base.authority();
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| HttpError::Connect(format!("{authority}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base.prefix))
            .header(http::header::HOST, authority.as_str());
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| HttpError::Exchange(e.to_string()))?;
        if self.base.tls {
            let config = self
                .tls
                .clone()
                .ok_or_else(|| HttpError::Connect("https needs a TLS configuration".to_owned()))?;
            let name = rustls::pki_types::ServerName::try_from(self.base.host.clone())
                .map_err(|e| HttpError::Url(format!("{}: {e}", self.base.host)))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| HttpError::Connect(format!("TLS to {authority}: {e}")))?;
            let spki = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| spki_sha256_of_cert(leaf.as_ref()));
            let mut response = exchange(stream, request, self.max_body).await?;
            response.peer_spki_sha256 = spki;
            Ok(response)
        } else {
            exchange(tcp, request, self.max_body).await
        }
    }
}

async fn exchange<S>(
    stream: S,
    request: http::Request<Full<Bytes>>,
    max_body: Option<usize>,
) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Exchange(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpError::Exchange(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, max_body.unwrap_or(usize::MAX))
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                HttpError::TooLarge(max_body.unwrap_or(usize::MAX))
            } else {
                HttpError::Exchange(format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    driver.abort();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        peer_spki_sha256: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse() {
        let url = BaseUrl::parse("https://gw.example:8443/api/").unwrap();
        assert!(url.tls);
        assert_eq!(url.port, 8443);
        assert_eq!(url.prefix, "/api");
        let url = BaseUrl::parse("http://127.0.0.1:8000").unwrap();
        assert!(!url.tls);
        assert_eq!(url.authority(), "127.0.0.1:8000");
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert_eq!(
            BaseUrl::parse("http://[::1]:9").unwrap().authority(),
            "[::1]:9"
        );
    }
}
