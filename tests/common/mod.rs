//! Test harness: real sockets on ephemeral ports. `Upstream` runs the mock upstream
//! in-process (signet-testkit), `Gateway` runs the `signet` binary with a generated config, and
//! the HTTP helpers talk to them over real sockets. Readiness is polled with a deadline;
//! nothing sleeps for a fixed time.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SEED_REQUEST: &[u8] = include_bytes!("../fixtures/seed-request.json");
pub const SEED_RESPONSE: &[u8] = include_bytes!("../fixtures/seed-response.sse");
pub const SEED_ID: &str = "chat-7ee2a39468ce48d7b2284783f21782b0";
pub const SEED_TEXT: &str = "bcf152411970b14faab35a76d559b4188b78c24ced0048d0edcd320bf47bff0a:2e704942816901eaf435945fd01d76346e5dd283d5f8a2391e525e8f9a9ef36e";

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The mock upstream, running in this test process (signet-testkit).
pub struct Upstream {
    server: signet_testkit::mock::MockUpstream,
    pub addr: SocketAddr,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with the binary's flags (`--listen`, `--events`, ...); fixtures replay
    /// from tests/fixtures.
    pub fn start_with(extra: &[&str]) -> Self {
        let args = [
            "--replay-dir".to_owned(),
            fixtures_dir().display().to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| (*a).to_owned()));
        let options = signet_testkit::mock::MockOptions::from_args(args).expect("mock flags");
        let server = signet_testkit::mock::spawn(options).expect("start the mock upstream");
        let addr = server.addr;
        Upstream { server, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stats(&self) -> serde_json::Value {
        let reply = request(self.addr, "GET", "/_mock/stats", &[], Vec::new()).await;
        serde_json::from_slice(&reply.body).expect("stats json")
    }

    /// Requests the upstream has seen completely (path, body hash...).
    pub async fn seen(&self) -> Vec<serde_json::Value> {
        self.stats().await["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn release(&self, token: &str) {
        let reply = request(
            self.addr,
            "POST",
            &format!("/_mock/release/{token}"),
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, 200);
    }

    /// Stops it as a dying process would: listener and connections closed.
    pub fn kill(&mut self) {
        self.server.stop();
    }
}

/// The signet binary under test.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

pub fn signet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_signet")
}

/// A config for a gateway listening on `port` in front of `upstream_url`; `extra` is
/// appended inside the `signet:` section (indented by two spaces).
pub fn config_text(port: u16, upstream_url: &str, dir: &Path, extra: &str) -> String {
    // The template tests and scripts share (conf/template.yaml.in).
    let template = include_str!("../../conf/template.yaml.in");
    let mut text = template
        .replace("@THREADS@", "2")
        .replace("@DIR@", &dir.display().to_string())
        .replace("@NAME@", "signet")
        .replace("@PORT@", &port.to_string())
        .replace("@UPSTREAM@", upstream_url)
        .replace("@GPU@", "none");
    text.push_str(extra);
    text
}

impl Gateway {
    pub fn start(upstream_url: &str) -> Self {
        Self::start_with(upstream_url, "")
    }

    pub fn start_with(upstream_url: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("signet.yaml");
        std::fs::write(&config, config_text(port, upstream_url, dir.path(), extra))
            .expect("write config");
        Self::spawn(dir, config, port)
    }

    pub fn spawn(dir: tempfile::TempDir, config: PathBuf, port: u16) -> Self {
        let gateway = Self::spawn_quietly(dir, config, port);
        gateway.wait_ready();
        gateway
    }

    /// Starts signet and waits only until its port accepts connections (for TLS listeners,
    /// where the plaintext health probe cannot be used).
    pub fn spawn_listening(dir: tempfile::TempDir, config: PathBuf, port: u16) -> Self {
        let gateway = Self::spawn_quietly(dir, config, port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(gateway.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "signet did not listen; log:\n{}",
                gateway.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        gateway
    }

    fn spawn_quietly(dir: tempfile::TempDir, config: PathBuf, port: u16) -> Self {
        Self::spawn_command(dir, config, port, |_| {})
    }

    /// Starts signet with `RUST_LOG` set to `rust_log` and waits until it is ready.
    pub fn start_logging(upstream_url: &str, extra: &str, rust_log: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("signet.yaml");
        std::fs::write(&config, config_text(port, upstream_url, dir.path(), extra))
            .expect("write config");
        let rust_log = rust_log.to_owned();
        let gateway = Self::spawn_command(dir, config, port, move |command| {
            command.env("RUST_LOG", rust_log);
        });
        gateway.wait_ready();
        gateway
    }

    /// [`Gateway::spawn`], with the command adjusted by `configure` first (another user, say).
    pub fn spawn_configured(
        dir: tempfile::TempDir,
        config: PathBuf,
        port: u16,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let gateway = Self::spawn_command(dir, config, port, configure);
        gateway.wait_ready();
        gateway
    }

    fn spawn_command(
        dir: tempfile::TempDir,
        config: PathBuf,
        port: u16,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let log_path = dir.path().join("signet.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(signet_bin());
        command
            .args(["serve", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        configure(&mut command);
        let child = command.spawn().expect("spawn signet");
        Gateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            log_path,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(self.addr) {
                use std::io::{Read, Write};
                let _ = stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "signet did not become ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the access log has a line containing every one of `needles`.
    pub fn wait_for_log_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn health(&self) -> serde_json::Value {
        let reply = request(self.addr, "GET", "/health", &[], Vec::new()).await;
        assert_eq!(reply.status, 200);
        serde_json::from_slice(&reply.body).expect("health json")
    }

    pub async fn signing_address(&self) -> String {
        self.health().await["signing_address"]
            .as_str()
            .expect("address")
            .to_owned()
    }

    pub async fn signature(&self, id: &str) -> Reply {
        request(
            self.addr,
            "GET",
            &format!("/v1/signature/{id}"),
            &[],
            Vec::new(),
        )
        .await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        request(self.addr, "POST", path, &all, body.to_vec()).await
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the OpenAI error envelope with this status and code.
    pub fn assert_envelope(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let value = self.json();
        assert_eq!(value["error"]["code"], code, "{value}");
        assert!(value["error"]["message"].is_string(), "{value}");
        assert!(value["error"]["type"].is_string(), "{value}");
        assert!(value["error"].get("param").is_some(), "{value}");
        assert_eq!(
            self.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("")),
            Some("application/json")
        );
    }
}

/// An open response whose body is read frame by frame.
pub struct OpenReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    body: Incoming,
}

impl OpenReply {
    /// The next data frame, `None` at the end; an error if the connection broke.
    pub async fn next_data(&mut self) -> Result<Option<Bytes>, hyper::Error> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Reads until `needle` has been received; returns everything read.
    pub async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.windows(needle.len()).any(|w| w == needle) {
            match self.next_data().await {
                Ok(Some(data)) => got.extend_from_slice(&data),
                other => panic!(
                    "stream ended before {:?}: {other:?}",
                    String::from_utf8_lossy(needle)
                ),
            }
        }
        got
    }

    /// Reads the rest of the body.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, hyper::Error> {
        let mut got = Vec::new();
        while let Some(data) = self.next_data().await? {
            got.extend_from_slice(&data);
        }
        Ok(got)
    }
}

/// Sends one request on a fresh connection and returns the open response.
pub async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> OpenReply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder.body(Full::new(Bytes::from(body))).expect("request");
    let response = sender.send_request(req).await.expect("send request");
    let (parts, body) = response.into_parts();
    OpenReply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut open = open(addr, method, path, headers, body).await;
    let body = open.read_to_end().await.expect("read body");
    Reply {
        status: open.status,
        headers: open.headers,
        body: Bytes::from(body),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Recovers the EIP-191 signer with signet's own code.
pub fn recover(text: &str, signature: &str) -> String {
    let sig = signet_core::signing::RecoverableSignature::parse(signature).expect("signature");
    signet_core::signing::recover_address(text.as_bytes(), &sig)
        .expect("recover")
        .to_checksum()
}

/// Checks a receipt: text = sha256(request):sha256(response), signed by `address`.
pub fn assert_receipt(receipt: &serde_json::Value, request: &[u8], response: &[u8], address: &str) {
    let expected = format!("{}:{}", sha256_hex(request), sha256_hex(response));
    assert_eq!(receipt["text"], expected.as_str(), "{receipt}");
    assert_eq!(receipt["signing_address"], address);
    assert_eq!(receipt["signing_algo"], "ecdsa");
    let signature = receipt["signature"].as_str().expect("signature");
    assert!(
        signature.starts_with("0x") && signature.len() == 132,
        "{signature}"
    );
    assert_eq!(recover(&expected, signature), address);
}

/// The attestation section of [`config_text`].
pub const DEV_ATTESTATION: &str = "  attestation:\n    mode: dev\n    gpu: none\n";

/// Runs `signet serve` with `attestation` (indented lines under `attestation:`) on a config
/// that must make it refuse to start; returns its stderr.
pub fn expect_start_failure(attestation: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("signet.yaml");
    let text = config_text(port, "http://127.0.0.1:9", dir.path(), "")
        .replace(DEV_ATTESTATION, &format!("  attestation:\n{attestation}"));
    std::fs::write(&config, text).expect("write");
    let mut child = Command::new(signet_bin())
        .args(["serve", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn signet");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "signet must refuse to start");
            let mut stderr = String::new();
            use std::io::Read;
            let _ = child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr);
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("signet did not exit: it started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Gateway {
    /// Restarts this gateway's configuration with `upstreams: [...]` instead of `upstream`.
    pub fn with_upstreams(mut self, urls: &[String]) -> Self {
        self.kill();
        let config = self.dir.path().join("signet.yaml");
        let text = std::fs::read_to_string(&config).expect("config");
        let list = urls
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = text
            .lines()
            .map(|line| {
                if line.starts_with("  upstream: ") {
                    format!("  upstreams: [{list}]")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text + "\n").expect("write config");
        let port = self.addr.port();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        Self::spawn(dir, config, port)
    }

    /// Starts signet with a custom attestation section.
    pub fn start_with_attestation(upstream_url: &str, attestation: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("signet.yaml");
        let text = config_text(port, upstream_url, dir.path(), extra)
            .replace(DEV_ATTESTATION, &format!("  attestation:\n{attestation}"));
        std::fs::write(&config, text).expect("write config");
        Self::spawn(dir, config, port)
    }
}

/// What a [`FakeHttp`] handler sees.
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// What a [`FakeHttp`] handler answers.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Answer {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Answer {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: Bytes::from(value.to_string()),
        }
    }
}

type BoxedAnswer = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;
type Handler = std::sync::Arc<dyn Fn(Seen) -> BoxedAnswer + Send + Sync>;

/// An HTTP/1.1 server in the test process whose answers come from a closure: fake
/// services (PCCS, NRAS, a gateway) and men in the middle.
pub struct FakeHttp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHttp {
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Answer> + Send + 'static,
    {
        let handler: Handler = std::sync::Arc::new(move |seen| Box::pin(handler(seen)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let handler = handler.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let seen = Seen {
                                    method: parts.method.to_string(),
                                    path_and_query: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.to_string())
                                        .unwrap_or_default(),
                                    headers: parts.headers,
                                    body,
                                };
                                let answer = handler(seen).await;
                                let mut builder = http::Response::builder().status(answer.status);
                                for (name, value) in &answer.headers {
                                    builder = builder.header(name.as_str(), value.as_str());
                                }
                                Ok::<_, std::convert::Infallible>(
                                    builder.body(Full::new(answer.body)).expect("response"),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeHttp { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A man in the middle in front of `target`: forwards every request, letting
    /// `tamper_request` rewrite the path and `tamper_response` rewrite the answer body.
    pub async fn man_in_the_middle(
        target: SocketAddr,
        tamper_request: fn(&str) -> String,
        tamper_response: fn(&str, Bytes) -> Bytes,
    ) -> Self {
        Self::start(move |seen: Seen| async move {
            let path = tamper_request(&seen.path_and_query);
            let mut headers: Vec<(&str, &str)> = Vec::new();
            let content_type = seen
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(ct) = content_type.as_deref() {
                headers.push(("content-type", ct));
            }
            let reply = request(target, &seen.method, &path, &headers, seen.body.to_vec()).await;
            let body = tamper_response(&path, reply.body);
            let mut answer_headers = Vec::new();
            if let Some(ct) = reply
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
            {
                answer_headers.push(("content-type".to_owned(), ct.to_owned()));
            }
            Answer {
                status: reply.status,
                headers: answer_headers,
                body,
            }
        })
        .await
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `signet verify` (or any signet subcommand) to completion, returning (success, stdout).
pub fn run_signet(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(signet_bin())
        .args(args)
        .output()
        .expect("run signet");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `signet verify` on a blocking thread (the fakes it talks to live on this runtime).
pub async fn verify_json(args: Vec<String>) -> (bool, serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let mut all = vec![
            "verify".to_owned(),
            "--json".to_owned(),
            "--timeout".to_owned(),
            "20s".to_owned(),
        ];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (ok, stdout, stderr) = run_signet(&refs);
        let value: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {stdout}\n{stderr}"));
        assert_eq!(
            ok,
            value["verdict"] == "pass",
            "exit status agrees with the verdict: {value}"
        );
        (ok, value)
    })
    .await
    .expect("join")
}

/// The status of check `name` in a verify JSON checklist.
pub fn check_status(checklist: &serde_json::Value, name: &str) -> String {
    checklist["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no check {name} in {checklist}"))
}

/// The value of one Prometheus sample, `name{labels}` exactly as exposed; 0 if absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|line| {
            line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' ')
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The Prometheus text served on an admin listener.
pub async fn scrape(port: u16) -> String {
    let reply = request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        "/metrics",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// A fresh self-signed certificate for `localhost`, as PEM.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    pub fn localhost() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Writes `cert` to `dir` as `NAME.pem` and `NAME.key`; returns both paths.
pub fn write_cert(dir: &Path, name: &str, cert: &TestCert) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    (cert_path, key_path)
}

impl Gateway {
    /// A gateway terminating TLS with `cert`, kept in its directory as `serving.pem` and
    /// `serving.key` (rewrite them there to rotate the certificate).
    pub fn start_tls(upstream_url: &str, cert: &TestCert) -> Self {
        Self::start_tls_with(upstream_url, cert, "")
    }

    /// The same, with `extra` configuration (indented under `signet:`).
    pub fn start_tls_with(upstream_url: &str, cert: &TestCert, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = write_cert(dir.path(), "serving", cert);
        let port = free_port();
        let config = dir.path().join("signet.yaml");
        let tls = format!(
            "  tls:\n    cert: {}\n    key: {}\n{extra}",
            cert_path.display(),
            key_path.display()
        );
        std::fs::write(&config, config_text(port, upstream_url, dir.path(), &tls)).unwrap();
        Gateway::spawn_listening(dir, config, port)
    }
}

// --- Checks from outside signet ------------------------------------------------------------

/// Runs a Python script (python3 with eth-account, installed by `scripts/setup.sh`) with
/// `input` on its standard input; returns its standard output.
pub fn python(script: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (scripts/setup.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Recovers the EIP-191 signers of `(text, signature)` pairs with Python's eth-account, an
/// implementation that is not signet's (one process for all of them).
pub fn recover_independently_many(pairs: &[(String, String)]) -> Vec<String> {
    let script = "import json, sys\nfrom eth_account import Account\nfrom eth_account.messages import encode_defunct\nfor text, signature in json.load(sys.stdin):\n    print(Account.recover_message(encode_defunct(text=text), signature=signature))";
    let out = python(script, &serde_json::to_string(pairs).unwrap());
    let addresses: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(addresses.len(), pairs.len(), "{out}");
    addresses
}

/// Recovers the EIP-191 signer of one signature with Python's eth-account.
pub fn recover_independently(text: &str, signature: &str) -> String {
    recover_independently_many(&[(text.to_owned(), signature.to_owned())])
        .pop()
        .unwrap()
}

/// The EIP-55 address of an uncompressed secp256k1 public key (128 hex chars, no `04`),
/// computed by Python's eth-keys.
pub fn address_of_public_key_independently(public_key_hex: &str) -> String {
    let script = "import sys\nfrom eth_keys import keys\nprint(keys.PublicKey(bytes.fromhex(sys.stdin.read().strip())).to_checksum_address())";
    python(script, public_key_hex).trim().to_owned()
}

/// [`assert_receipt`], with the signature also recovered by eth-account.
pub fn assert_receipt_independently(
    receipt: &serde_json::Value,
    request: &[u8],
    response: &[u8],
    address: &str,
) {
    assert_receipt(receipt, request, response, address);
    assert_eq!(
        recover_independently(
            receipt["text"].as_str().unwrap(),
            receipt["signature"].as_str().unwrap()
        ),
        address,
        "eth-account recovers another signer: {receipt}"
    );
}

impl Gateway {
    /// The access line of the request sent with `x-request-id: request_id`, as its
    /// `name=value` fields; waits for it. Pick lines by request id, then assert their fields:
    /// a line picked by the value under test proves nothing about that value.
    pub fn access_line(&self, request_id: &str) -> std::collections::HashMap<String, String> {
        let needle = format!("request_id={request_id} ");
        let line = self.wait_for_log_line(&["signet::access", &needle]);
        line.split_whitespace()
            .filter_map(|field| field.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// The response body decoded from raw HTTP/1.1 bytes read so far (head included): chunked or
/// length-delimited, possibly incomplete. `None` until the head is complete.
pub fn body_so_far(raw: &[u8]) -> Option<Vec<u8>> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let rest = &raw[head_end..];
    if !head.contains("transfer-encoding: chunked") {
        return Some(rest.to_vec());
    }
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(line_len) = rest[at..].windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[at..at + line_len]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        let start = at + line_len + 2;
        if size == 0 {
            break;
        }
        let end = (start + size).min(rest.len());
        body.extend_from_slice(&rest[start..end]);
        if start + size + 2 > rest.len() {
            break;
        }
        at = start + size + 2;
    }
    Some(body)
}

/// A TLS client trusting `cert_pem`, offering `alpn`.
pub fn tls_client(cert_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// A kept-alive HTTP/1.1 connection over TLS (trusting `cert`, as `localhost`).
pub async fn https_connection(
    addr: SocketAddr,
    cert: &TestCert,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    https_connection_over(tokio::net::TcpStream::connect(addr).await.unwrap(), cert).await
}

/// [`https_connection`] over a TCP connection the caller made (from a chosen address, say).
pub async fn https_connection_over(
    tcp: tokio::net::TcpStream,
    cert: &TestCert,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_client(&cert.cert_pem, &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// GET `path` over HTTP/1.1 and TLS (trusting `cert`, as `localhost`): the reply and the DER
/// certificate the server presented.
pub async fn https_get(addr: SocketAddr, cert: &TestCert, path: &str) -> (Reply, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_client(&cert.cert_pem, &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        Reply {
            status,
            headers,
            body,
        },
        presented,
    )
}

/// sha256 of the DER SubjectPublicKeyInfo of a DER certificate, computed by the openssl
/// command line (not by signet's code), as lowercase hex.
pub fn spki_sha256_by_openssl(cert_der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cert.der");
    std::fs::write(&path, cert_der).unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; openssl x509 -inform DER -in '{}' -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum",
            path.display()
        ))
        .output()
        .expect("bash and openssl");
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let hash = text.split_whitespace().next().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "{text}");
    hash
}

/// A dstack agent on a unix socket in `dir` that answers only `POST /GetKey`: the key of a
/// path is sha256("fake-kms:" + path), the same on every call, as the dstack KMS's is for
/// one application; its chain is two opaque hex strings.
pub async fn fake_kms_agent(dir: &Path) -> PathBuf {
    use sha2::Digest;
    let path = dir.join("dstack.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind the agent socket");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<Incoming>| async move {
                        let is_get_key = req.uri().path() == "/GetKey";
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let json: serde_json::Value = body
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or_default();
                        let (status, answer) = match json["path"].as_str() {
                            Some(key_path) if is_get_key => (
                                200,
                                serde_json::json!({
                                    "key": hex::encode(sha2::Sha256::digest(format!("fake-kms:{key_path}"))),
                                    "signature_chain": ["aa".repeat(65), "bb".repeat(65)],
                                }),
                            ),
                            _ => (404, serde_json::json!({"error": "not here"})),
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(answer.to_string())))
                                .expect("response"),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    path
}
