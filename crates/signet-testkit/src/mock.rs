//! `signet-mock-upstream`: a small, fast OpenAI-format inference server for signet's tests
//! and benchmarks. It speaks HTTP/1.1 itself (on top of `httparse`) rather than through a
//! server framework, because its job is to misbehave precisely: cut bodies at chosen byte
//! offsets, pause between chunks, die mid-stream, hold a stream until a test releases it,
//! or close a keep-alive connection after a response the way llama-server does.
//!
//! Tests start it in-process with [`spawn`] and get a [`MockUpstream`] handle (its address,
//! and `stop`, which closes the listener and every connection as a dying process would); the
//! `signet-mock-upstream` binary runs the same server for benchmarks and prints
//! `LISTENING <addr>` on its first stdout line. Defaults come from [`MockOptions`];
//! per-request behaviour comes from `x-mock-*` request headers (signet forwards them
//! unchanged):
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-status: N` | answer status N with an OpenAI-style JSON error |
//! | `x-mock-replay: NAME` | send file NAME from `--replay-dir` as the body |
//! | `x-mock-events: N` | N content events (stream) / N tokens (JSON) |
//! | `x-mock-event-bytes: N` | pad each event's content to about N bytes |
//! | `x-mock-chunks: 1,7,3` | write the body in pieces of these sizes, cycling |
//! | `x-mock-delay-ms: N` / `x-mock-delay-us: N` | pause between pieces |
//! | `x-mock-gate: TOKEN` | after the first piece, wait for `POST /_mock/release/TOKEN` |
//! | `x-mock-die-after: N` | write N body bytes, then drop the connection |
//! | `x-mock-framing: chunked\|length\|close` | how the body is delimited |
//! | `x-mock-close: 1` | close the connection after a complete response (llama-server's habit) |
//! | `x-mock-close-after-ms: N` | after a complete response, wait N ms without reading, then close: a request sent meanwhile is reset unread |
//! | `x-mock-id: ID` | use this completion id |
//! | `x-mock-hangup: 1` | read the whole request, then close without answering |
//! | `x-mock-end-delay-ms: N` | pause N ms before the end of the body (the last chunk marker) |
//! | `x-mock-head-delay-ms: N` | pause N ms before sending the response head |
//! | `x-mock-header: Name: value` | add this header to the response head |
//!
//! `GET /_mock/stats` reports every request seen (path, body sha256, a few headers) so tests
//! can check what reached the upstream, plus `incomplete` (requests whose connection closed
//! after the head but before the body's end) and `incomplete_body_bytes` (what came after
//! the heads of those); `POST /_mock/reset` clears it.

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

#[derive(Debug, Default, Clone)]
struct Defaults {
    events: usize,
    event_bytes: usize,
    delay_us: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct SeenRequest {
    method: String,
    path: String,
    body_sha256: String,
    body_len: usize,
    host: Option<String>,
    accept_encoding: Option<String>,
    authorization: Option<String>,
    x_request_id: Option<String>,
    content_type: Option<String>,
}

#[derive(Default)]
struct State {
    replay_dir: Option<PathBuf>,
    defaults: Defaults,
    seen: Mutex<VecDeque<SeenRequest>>,
    incomplete: AtomicU64,
    /// Bytes that came after the head of those incomplete requests (body and framing).
    incomplete_body_bytes: AtomicU64,
    counter: AtomicU64,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

const MAX_SEEN: usize = 100_000;
const MAX_HEAD: usize = 64 * 1024;

impl State {
    fn gate(&self, token: &str) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates
            .entry(token.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(0)))
            .clone()
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    http10: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    fn number(&self, name: &str) -> Option<u64> {
        self.header(name).and_then(|v| v.trim().parse().ok())
    }
}

/// How a mock upstream starts: where it listens and how it answers when a request's headers
/// say nothing.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Address to listen on (port 0: an ephemeral port).
    pub listen: SocketAddr,
    /// Directory that `x-mock-replay: NAME` reads files from.
    pub replay_dir: Option<PathBuf>,
    /// Content events per stream (tokens per JSON answer).
    pub events: usize,
    /// Pad each event's content to about this many bytes.
    pub event_bytes: usize,
    /// Pause between body pieces, in microseconds.
    pub delay_us: u64,
    /// Worker threads of the server's runtime.
    pub threads: usize,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            replay_dir: None,
            events: 8,
            event_bytes: 0,
            delay_us: 0,
            threads: 2,
        }
    }
}

impl MockOptions {
    /// Reads the binary's flags (`--listen`, `--replay-dir`, `--events`, `--event-bytes`,
    /// `--delay-us`, `--threads`).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().unwrap_or_default();
            match arg.as_str() {
                "--listen" => options.listen = value().parse().unwrap_or(options.listen),
                "--replay-dir" => options.replay_dir = Some(PathBuf::from(value())),
                "--events" => options.events = value().parse().unwrap_or(8),
                "--event-bytes" => options.event_bytes = value().parse().unwrap_or(0),
                "--delay-us" => options.delay_us = value().parse().unwrap_or(0),
                "--threads" => options.threads = value().parse().unwrap_or(2),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(options)
    }

    fn state(&self) -> State {
        State {
            replay_dir: self.replay_dir.clone(),
            defaults: Defaults {
                events: self.events,
                event_bytes: self.event_bytes,
                delay_us: self.delay_us,
            },
            ..State::default()
        }
    }
}

/// A running mock upstream. Dropping it (or [`MockUpstream::stop`]) closes the listener and
/// every open connection, as a dying process would.
#[derive(Debug)]
pub struct MockUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockUpstream {
    /// Stops serving: the listener and every connection are closed before this returns.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a mock upstream on its own thread and runtime (so sync and async tests alike can
/// use it) and returns once it is listening.
pub fn spawn(options: MockOptions) -> std::io::Result<MockUpstream> {
    let listener = std::net::TcpListener::bind(options.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .enable_all()
        .build()?;
    let state = Arc::new(options.state());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("mock-upstream".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                tokio::select! {
                    () = serve(listener, state) => {}
                    _ = stopped => {}
                }
            });
            // Every connection task is dropped here, closing its socket.
            runtime.shutdown_background();
        })?;
    Ok(MockUpstream {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Runs a mock upstream on this thread until the process ends, printing `LISTENING <addr>`
/// first (the binary).
pub fn serve_forever(options: MockOptions) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(options.listen).await?;
        println!("LISTENING {}", listener.local_addr()?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        serve(listener, Arc::new(options.state())).await;
        Ok(())
    })
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let _ = connection(stream, state).await;
        });
    }
}

async fn connection(mut stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let Some(request) = read_request(&mut stream, &mut buf, &state).await? else {
            return Ok(());
        };
        let keep_open = respond(&mut stream, &request, &state).await?;
        if request.header("x-mock-hangup").is_some() {
            // Everything was read: the close is a clean FIN, not a reset.
            let _ = stream.shutdown().await;
            return Ok(());
        }
        if let Some(ms) = request.number("x-mock-close-after-ms") {
            // Leave whatever arrives unread, then close: the kernel answers it with a reset.
            tokio::time::sleep(Duration::from_millis(ms)).await;
            drop(stream);
            return Ok(());
        }
        if !keep_open || request.http10 {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<bool> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(8192);
    }
    match stream.read_buf(buf).await {
        Ok(n) => Ok(n > 0),
        // A peer that resets has ended the connection all the same (and a request cut off
        // by it counts as incomplete).
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(e),
    }
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    state: &State,
) -> std::io::Result<Option<Request>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    // Head.
    let (method, path, headers, head_len, http10) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers: HashMap<String, String> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    parsed.method.unwrap_or("GET").to_owned(),
                    parsed.path.unwrap_or("/").to_owned(),
                    headers,
                    len,
                    parsed.version == Some(0),
                );
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(invalid("head too large"));
                }
                if !fill(stream, buf).await? {
                    return Ok(None);
                }
            }
            Err(_) => return Err(invalid("bad request head")),
        }
    };
    buf.advance(head_len);
    // Body.
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        match read_chunked(stream, buf).await? {
            Ok(body) => body,
            Err(received) => {
                state.incomplete.fetch_add(1, Ordering::Relaxed);
                state
                    .incomplete_body_bytes
                    .fetch_add(received as u64, Ordering::Relaxed);
                return Ok(None);
            }
        }
    } else {
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            if !fill(stream, buf).await? {
                state.incomplete.fetch_add(1, Ordering::Relaxed);
                state
                    .incomplete_body_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                return Ok(None);
            }
        }
        buf.split_to(length).to_vec()
    };
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
        http10,
    }))
}

/// The body, or (`Err`) how many bytes came after the head before the connection closed.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<Result<Vec<u8>, usize>> {
    let mut body = Vec::new();
    // Framing bytes consumed so far (the body's own bytes are counted by `body`).
    let mut framing = 0usize;
    loop {
        let line_end = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                break pos;
            }
            if !fill(stream, buf).await? {
                return Ok(Err(body.len() + framing + buf.len()));
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        buf.advance(line_end + 2);
        framing += line_end + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                    buf.advance(pos + 2);
                    framing += pos + 2;
                    if pos == 0 {
                        return Ok(Ok(body));
                    }
                } else if !fill(stream, buf).await? {
                    return Ok(Err(body.len() + framing + buf.len()));
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await? {
                return Ok(Err(body.len() + framing + buf.len()));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
        framing += 2;
    }
}

fn json_response(status: u16, body: &serde_json::Value) -> (u16, &'static str, Vec<u8>) {
    (status, "application/json", body.to_string().into_bytes())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the body of a completion (stream or JSON) the way vLLM shapes it.
/// The id a mock answer carries: `x-mock-id`, else one of `prefix`.
fn mock_id(request: &Request, state: &State, prefix: &str) -> String {
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    request
        .header("x-mock-id")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{prefix}mock{}-{n}", std::process::id()))
}

fn wants_stream(request: &Request) -> Result<bool, (u16, &'static str, Vec<u8>)> {
    let parsed: serde_json::Value = serde_json::from_slice(&request.body).map_err(|e| {
        json_response(
            400,
            &serde_json::json!({"object":"error","message":format!("bad json: {e}"),"type":"BadRequestError","param":null,"code":400}),
        )
    })?;
    Ok(parsed.get("stream").and_then(serde_json::Value::as_bool) == Some(true))
}

/// Writes one SSE event with an `event:` line, as the Responses and Messages APIs do.
fn typed_event(body: &mut Vec<u8>, event: &str, data: &serde_json::Value) {
    body.extend_from_slice(format!("event: {event}\ndata: {data}\n\n").as_bytes());
}

/// OpenAI's Responses API: a `response` object, or a stream whose `response.created` event
/// carries the id.
fn responses_body(request: &Request, state: &State) -> (u16, &'static str, Vec<u8>) {
    let stream = match wants_stream(request) {
        Ok(stream) => stream,
        Err(answer) => return answer,
    };
    let id = mock_id(request, state, "resp_");
    let response = |status: &str, text: &str| {
        serde_json::json!({"id": id, "object": "response", "created_at": now_secs(), "status": status, "model": "mock-model",
            "output": [{"type":"message","id":"msg_mock","status":"completed","role":"assistant","content":[{"type":"output_text","text":text,"annotations":[]}]}]})
    };
    if !stream {
        return json_response(200, &response("completed", "Hello from the mock"));
    }
    let mut body = Vec::new();
    typed_event(
        &mut body,
        "response.created",
        &serde_json::json!({"type":"response.created","sequence_number":0,"response":response("in_progress", "")}),
    );
    for (i, word) in ["Hello", " from", " the", " mock"].iter().enumerate() {
        typed_event(
            &mut body,
            "response.output_text.delta",
            &serde_json::json!({"type":"response.output_text.delta","sequence_number":i + 1,"item_id":"msg_mock","output_index":0,"content_index":0,"delta":word}),
        );
    }
    typed_event(
        &mut body,
        "response.completed",
        &serde_json::json!({"type":"response.completed","sequence_number":5,"response":response("completed", "Hello from the mock")}),
    );
    (200, "text/event-stream", body)
}

/// Anthropic's Messages API: a `message` object, or a stream whose `message_start` event
/// carries the id.
fn messages_body(request: &Request, state: &State) -> (u16, &'static str, Vec<u8>) {
    let stream = match wants_stream(request) {
        Ok(stream) => stream,
        Err(answer) => return answer,
    };
    let id = mock_id(request, state, "msg_");
    let usage = serde_json::json!({"input_tokens": 3, "output_tokens": 4});
    if !stream {
        return json_response(
            200,
            &serde_json::json!({"id": id, "type": "message", "role": "assistant", "model": "mock-model",
                "content": [{"type":"text","text":"Hello from the mock"}], "stop_reason": "end_turn", "stop_sequence": null, "usage": usage}),
        );
    }
    let mut body = Vec::new();
    typed_event(
        &mut body,
        "message_start",
        &serde_json::json!({"type":"message_start","message":{"id": id, "type":"message","role":"assistant","model":"mock-model","content":[],"stop_reason":null,"stop_sequence":null,"usage":usage}}),
    );
    typed_event(
        &mut body,
        "content_block_start",
        &serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    typed_event(&mut body, "ping", &serde_json::json!({"type":"ping"}));
    for word in ["Hello", " from", " the", " mock"] {
        typed_event(
            &mut body,
            "content_block_delta",
            &serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":word}}),
        );
    }
    typed_event(
        &mut body,
        "content_block_stop",
        &serde_json::json!({"type":"content_block_stop","index":0}),
    );
    typed_event(
        &mut body,
        "message_delta",
        &serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}),
    );
    typed_event(
        &mut body,
        "message_stop",
        &serde_json::json!({"type":"message_stop"}),
    );
    (200, "text/event-stream", body)
}

fn completion_body(request: &Request, state: &State, chat: bool) -> (u16, &'static str, Vec<u8>) {
    let parsed: serde_json::Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                400,
                &serde_json::json!({"object":"error","message":format!("bad json: {e}"),"type":"BadRequestError","param":null,"code":400}),
            );
        }
    };
    let stream = parsed.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
    let model = parsed
        .get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("mock-model")
        .to_owned();
    let events = request
        .number("x-mock-events")
        .map_or(state.defaults.events, |n| n as usize);
    let pad = request
        .number("x-mock-event-bytes")
        .map_or(state.defaults.event_bytes, |n| n as usize);
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let id = request
        .header("x-mock-id")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{}-mock{}-{n}",
                if chat { "chatcmpl" } else { "cmpl" },
                std::process::id()
            )
        });
    let created = now_secs();
    let token = |i: usize| {
        let mut t = format!(" tok{i}");
        while t.len() < pad {
            t.push('x');
        }
        t
    };
    if stream {
        let mut body = Vec::with_capacity(events * (200 + pad));
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut event = |choice: serde_json::Value| {
            let value = serde_json::json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]});
            body.extend_from_slice(b"data: ");
            body.extend_from_slice(value.to_string().as_bytes());
            body.extend_from_slice(b"\n\n");
        };
        if chat {
            event(
                serde_json::json!({"index":0,"delta":{"role":"assistant"},"logprobs":null,"finish_reason":null}),
            );
        }
        for i in 0..events {
            if chat {
                event(
                    serde_json::json!({"index":0,"delta":{"content":token(i)},"logprobs":null,"finish_reason":null}),
                );
            } else {
                event(
                    serde_json::json!({"index":0,"text":token(i),"logprobs":null,"finish_reason":null}),
                );
            }
        }
        if chat {
            event(
                serde_json::json!({"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null}),
            );
        } else {
            event(
                serde_json::json!({"index":0,"text":"","logprobs":null,"finish_reason":"stop","stop_reason":null}),
            );
        }
        body.extend_from_slice(b"data: [DONE]\n\n");
        (200, "text/event-stream", body)
    } else {
        let text: String = (0..events).map(token).collect();
        let choice = if chat {
            serde_json::json!({"index":0,"message":{"role":"assistant","content":text},"logprobs":null,"finish_reason":"stop"})
        } else {
            serde_json::json!({"index":0,"text":text,"logprobs":null,"finish_reason":"stop"})
        };
        json_response(
            200,
            &serde_json::json!({"id": id, "object": if chat {"chat.completion"} else {"text_completion"}, "created": created, "model": model, "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": events, "total_tokens": events + 1}}),
        )
    }
}

fn record(request: &Request, state: &State) {
    let seen = SeenRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        body_sha256: hex::encode(Sha256::digest(&request.body)),
        body_len: request.body.len(),
        host: request.header("host").map(str::to_owned),
        accept_encoding: request.header("accept-encoding").map(str::to_owned),
        authorization: request.header("authorization").map(str::to_owned),
        x_request_id: request.header("x-request-id").map(str::to_owned),
        content_type: request.header("content-type").map(str::to_owned),
    };
    let mut list = state.seen.lock().unwrap_or_else(|p| p.into_inner());
    // A ring: the oldest goes in O(1). (A Vec's remove(0) shifted all 100,000 entries on
    // every request once full, and made this upstream the bottleneck of long benchmarks.)
    if list.len() >= MAX_SEEN {
        list.pop_front();
    }
    list.push_back(seen);
}

/// Writes the response; returns whether the connection may serve another request.
async fn respond(
    stream: &mut TcpStream,
    request: &Request,
    state: &State,
) -> std::io::Result<bool> {
    let path = request.path.split('?').next().unwrap_or("/");
    if let Some(token) = path.strip_prefix("/_mock/release/") {
        state.gate(token).add_permits(1);
        return write_simple(stream, 200, "application/json", b"{\"released\":true}").await;
    }
    match path {
        "/_mock/stats" => {
            let seen = state.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let body = serde_json::json!({
                "requests": seen,
                "incomplete": state.incomplete.load(Ordering::Relaxed),
                "incomplete_body_bytes": state.incomplete_body_bytes.load(Ordering::Relaxed),
            });
            return write_simple(stream, 200, "application/json", body.to_string().as_bytes())
                .await;
        }
        "/_mock/reset" => {
            state.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
            state.incomplete.store(0, Ordering::Relaxed);
            state.incomplete_body_bytes.store(0, Ordering::Relaxed);
            return write_simple(stream, 200, "application/json", b"{}").await;
        }
        _ => {}
    }
    record(request, state);
    if request.header("x-mock-hangup").is_some() {
        return Ok(false);
    }
    let (status, content_type, body) = if let Some(code) = request.number("x-mock-status") {
        let code = u16::try_from(code).unwrap_or(500);
        json_response(
            code,
            &serde_json::json!({"object":"error","message":"mock upstream error","type":"MockError","param":null,"code":code}),
        )
    } else if let Some(name) = request.header("x-mock-replay") {
        let file = state
            .replay_dir
            .as_ref()
            .filter(|_| !name.contains('/') && !name.contains(".."))
            .map(|dir| dir.join(name));
        match file.map(std::fs::read) {
            Some(Ok(bytes)) => {
                let ct = if name.ends_with(".sse") {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                (200, ct, bytes)
            }
            _ => json_response(
                500,
                &serde_json::json!({"object":"error","message":"no such replay file","type":"MockError","param":null,"code":500}),
            ),
        }
    } else {
        match (request.method.as_str(), path) {
            ("POST", "/v1/chat/completions") => completion_body(request, state, true),
            ("POST", "/v1/completions") => completion_body(request, state, false),
            ("POST", "/v1/responses") => responses_body(request, state),
            ("POST", "/v1/messages") => messages_body(request, state),
            ("POST", "/v1/embeddings") => json_response(
                200,
                &serde_json::json!({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,0.125]}],"model":"mock-model","usage":{"prompt_tokens":3,"total_tokens":3}}),
            ),
            ("POST", "/v1/rerank") | ("POST", "/v1/score") => json_response(
                200,
                &serde_json::json!({"model":"mock-model","results":[{"index":0,"relevance_score":0.9}],"usage":{"total_tokens":7}}),
            ),
            ("POST", "/v1/audio/transcriptions") | ("POST", "/v1/audio/translations") => {
                // A multipart upload: answer with how many bytes came, as a transcript.
                json_response(
                    200,
                    &serde_json::json!({"text": format!("heard {} bytes", request.body.len())}),
                )
            }
            ("GET", "/v1/models") => json_response(
                200,
                &serde_json::json!({"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"signet"}]}),
            ),
            ("GET", "/health") => (200, "application/json", b"{}".to_vec()),
            ("POST", "/echo") => (200, "application/octet-stream", request.body.clone()),
            _ => json_response(
                404,
                &serde_json::json!({"object":"error","message":"not found","type":"NotFoundError","param":null,"code":404}),
            ),
        }
    };
    write_shaped(stream, request, state, status, content_type, &body).await
}

async fn write_simple(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<bool> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    Ok(true)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn pieces(request: &Request, body: &[u8], content_type: &str) -> Vec<(usize, usize)> {
    let pattern: Vec<usize> = request
        .header("x-mock-chunks")
        .map(|p| {
            p.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    if !pattern.is_empty() {
        let mut start = 0;
        let mut i = 0;
        while start < body.len() {
            let end = (start + pattern[i % pattern.len()]).min(body.len());
            out.push((start, end));
            start = end;
            i += 1;
        }
    } else if content_type == "text/event-stream" {
        // One piece per event, as a real server flushes them.
        let mut start = 0;
        while start < body.len() {
            let end = body[start..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map_or(body.len(), |p| start + p + 2);
            out.push((start, end));
            start = end;
        }
    } else if !body.is_empty() {
        out.push((0, body.len()));
    }
    out
}

async fn write_shaped(
    stream: &mut TcpStream,
    request: &Request,
    state: &State,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<bool> {
    let framing = request.header("x-mock-framing").unwrap_or("chunked");
    let close_after = request.header("x-mock-close").is_some();
    let die_after = request.number("x-mock-die-after").map(|n| n as usize);
    let delay = request
        .number("x-mock-delay-us")
        .or_else(|| request.number("x-mock-delay-ms").map(|ms| ms * 1000))
        .unwrap_or(state.defaults.delay_us);
    let gate = request.header("x-mock-gate").map(|t| state.gate(t));

    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n",
        reason(status)
    );
    if let Some(extra) = request.header("x-mock-header") {
        // `Name: value`: one more response header, verbatim (a forged signature, say).
        head.push_str(extra.trim());
        head.push_str("\r\n");
    }
    match framing {
        "length" => head.push_str(&format!("content-length: {}\r\n", body.len())),
        "close" => head.push_str("connection: close\r\n"),
        _ => head.push_str("transfer-encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    if let Some(ms) = request.number("x-mock-head-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    stream.write_all(head.as_bytes()).await?;

    let mut written = 0usize;
    for (index, (start, end)) in pieces(request, body, content_type).into_iter().enumerate() {
        let mut piece = &body[start..end];
        if let Some(limit) = die_after {
            if written + piece.len() > limit {
                piece = &piece[..limit - written];
                write_piece(stream, framing, piece).await?;
                stream.flush().await?;
                // Abrupt end: no terminating chunk, connection dropped.
                return Ok(false);
            }
        }
        if index > 0 && delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        write_piece(stream, framing, piece).await?;
        written += piece.len();
        if index == 0 {
            if let Some(gate) = &gate {
                stream.flush().await?;
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
            }
        }
    }
    if die_after.is_some_and(|limit| limit <= written) {
        return Ok(false);
    }
    if let Some(ms) = request.number("x-mock-end-delay-ms") {
        stream.flush().await?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if framing == "chunked" {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await?;
    Ok(framing != "close" && !close_after)
}

async fn write_piece(stream: &mut TcpStream, framing: &str, piece: &[u8]) -> std::io::Result<()> {
    if piece.is_empty() {
        return Ok(());
    }
    if framing == "chunked" {
        // One write per chunk: as a real server's, and cheap enough never to be the
        // bottleneck of a benchmark.
        let mut framed = Vec::with_capacity(piece.len() + 12);
        framed.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
        stream.write_all(&framed).await
    } else {
        stream.write_all(piece).await
    }
}
