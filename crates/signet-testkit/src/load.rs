//! `signet-load`: the load generator behind signet's soak test and benchmarks.
//!
//! - `soak` drives a gateway (in front of `signet-mock-upstream`) with a mix of streamed and
//!   JSON completions, client aborts mid-stream and upstream faults (5xx answers, streams cut
//!   mid-body), then proves the gateway's books: every completed response has a signature
//!   that recovers to the gateway's address over exactly the bytes received, every aborted
//!   or failed one has none (in the access log and on lookup), no request hung, and the
//!   gateway's RSS came back near its baseline. It prints a JSON report and exits non-zero on
//!   any violation.
//! - `bench` measures one target (signet, another proxy, or the upstream itself) at a fixed
//!   concurrency: requests per second, time to first body byte and to the end, and the CPU
//!   time a given process spent per request. It prints a JSON report.
//!
//!   With `--e2ee` every request is encrypted with ACI E2EE v2 to the target's attested key
//!   ([`e2ee`]), so the cost of terminating it reads against the same plain traffic.
//!
//! Every worker keeps one HTTP/1.1 keep-alive connection, as an SDK client does, and opens a
//! new one only after an abort or a connection error.

mod e2ee;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use signet_core::e2ee::crypto::Suite;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(name = "signet-load", about = "Soak and benchmark load for signet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Faults, aborts and signature checks at volume; exits 1 on any violation.
    Soak(SoakArgs),
    /// Throughput and latency of one target at one concurrency.
    Bench(BenchArgs),
    /// Memory per open stream: holds N slow streams open and reads a process's RSS.
    Hold(HoldArgs),
}

#[derive(Args)]
struct HoldArgs {
    /// host:port to open the streams through.
    #[arg(long)]
    target: SocketAddr,
    /// The process whose memory is measured.
    #[arg(long)]
    pid: u32,
    /// Streams held open at once.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Pause between the events of each stream: long enough to hold them all open.
    #[arg(long, default_value_t = 30_000)]
    event_delay_ms: u64,
}

#[derive(Args)]
struct SoakArgs {
    /// The gateway, e.g. 127.0.0.1:8443.
    #[arg(long)]
    target: SocketAddr,
    /// The gateway's admin listener (for /metrics).
    #[arg(long)]
    admin: SocketAddr,
    /// The gateway's process id (for its RSS).
    #[arg(long)]
    pid: u32,
    /// The gateway's log file (stderr), to check each request's access line.
    #[arg(long)]
    log: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Share of requests whose client leaves mid-stream.
    #[arg(long, default_value_t = 0.10)]
    abort_rate: f64,
    /// Share of requests the upstream fails (half 5xx, half cut mid-stream).
    #[arg(long, default_value_t = 0.05)]
    fault_rate: f64,
    /// Longest any single request may take before it counts as hung.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Most RSS growth over the baseline allowed at the end, in MiB, beyond the bytes the
    /// signature store holds by design.
    #[arg(long, default_value_t = 32)]
    rss_slack_mib: u64,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Args)]
struct BenchArgs {
    /// host:port to send to.
    #[arg(long)]
    target: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured requests (after the warm-up).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Streamed (SSE) completions rather than JSON ones.
    #[arg(long)]
    stream: bool,
    /// Events (stream) or tokens (JSON) per response (sent as x-mock-events).
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Bytes per event (x-mock-event-bytes).
    #[arg(long, default_value_t = 16)]
    event_bytes: usize,
    /// Pause between events, as a model paces its tokens (x-mock-delay-us).
    #[arg(long, default_value_t = 0)]
    delay_us: u64,
    /// Have the upstream write its body in pieces of this many bytes (x-mock-chunks), so
    /// many events arrive in one write, as a proxy sees them behind a slow reader or from
    /// a model that emits several tokens per step; 0 writes one piece per event.
    #[arg(long, default_value_t = 0)]
    write_bytes: usize,
    /// Processes whose CPU time is reported per request (the proxy under test).
    #[arg(long)]
    cpu_pid: Vec<u32>,
    /// A label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Encrypt every request with ACI E2EE v2 in this suite, to the target's attested key
    /// (`GET /v1/aci/attestation`: signet only). Each phase's requests are sealed before it
    /// starts, each with its own nonce; a phase must end within the 300-second timestamp
    /// window.
    #[arg(long, value_enum)]
    e2ee: Option<E2eeSuite>,
    /// Before the run, open one encrypted answer with the client key and compare it with
    /// the plain answer to the same request; exits 1 if they differ.
    #[arg(long, requires = "e2ee")]
    check: bool,
}

/// `--e2ee`'s suites.
#[derive(Clone, Copy, ValueEnum)]
enum E2eeSuite {
    /// x25519-aes-256-gcm-hkdf-sha256.
    X25519,
    /// secp256k1-aes-256-gcm-hkdf-sha256.
    Secp256k1,
}

impl E2eeSuite {
    fn suite(self) -> Suite {
        match self {
            E2eeSuite::X25519 => Suite::X25519,
            E2eeSuite::Secp256k1 => Suite::Secp256k1,
        }
    }
}

/// Runs `signet-load` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signet-load: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Soak(args) => runtime.block_on(soak(args)),
        Command::Bench(args) => runtime.block_on(bench(args)),
        Command::Hold(args) => runtime.block_on(hold(args)),
    }
}

// --- HTTP -------------------------------------------------------------------------------

/// One keep-alive connection, reopened when it breaks.
struct Connection {
    target: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// What came back for one request.
struct Exchange {
    status: u16,
    /// The body as received; `Err` when the connection broke before its end.
    body: Result<Vec<u8>, String>,
    /// Time from sending to the first body byte.
    first_byte: Option<Duration>,
    total: Duration,
}

impl Connection {
    fn new(target: SocketAddr) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let usable = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = tokio::net::TcpStream::connect(self.target)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_owned())
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, String> {
        let host = self.target.to_string();
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let sender = self.sender().await?;
        match sender.send_request(request).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.sender = None;
                Err(format!("send: {e}"))
            }
        }
    }

    /// Sends and reads the whole response; with `abort_after`, leaves after that many body
    /// bytes (closing the connection) instead.
    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
        abort_after: Option<usize>,
    ) -> Result<Exchange, String> {
        let started = Instant::now();
        let response = self.send(method, path, headers, body).await?;
        let status = response.status().as_u16();
        let mut incoming = response.into_body();
        let mut got = Vec::new();
        let mut first_byte = None;
        let outcome = loop {
            match incoming.frame().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(format!("body: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if first_byte.is_none() && !data.is_empty() {
                            first_byte = Some(started.elapsed());
                        }
                        got.extend_from_slice(&data);
                        if abort_after.is_some_and(|n| got.len() >= n) {
                            break Err("aborted by the client".to_owned());
                        }
                    }
                }
            }
        };
        if outcome.is_err() {
            // The connection is not reusable: drop it (for an abort, this is the abort).
            drop(incoming);
            self.sender = None;
        }
        Ok(Exchange {
            status,
            body: outcome.map(|()| got),
            first_byte,
            total: started.elapsed(),
        })
    }
}

async fn get(target: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut connection = Connection::new(target);
    let exchange = connection
        .exchange("GET", path, &[], Bytes::new(), None)
        .await?;
    Ok((exchange.status, exchange.body?))
}

// --- soak -------------------------------------------------------------------------------

/// What a request was meant to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Plan {
    Stream,
    Json,
    ClientAbort,
    Upstream5xx,
    UpstreamCut,
}

impl Plan {
    fn name(self) -> &'static str {
        match self {
            Plan::Stream => "stream",
            Plan::Json => "json",
            Plan::ClientAbort => "client_abort",
            Plan::Upstream5xx => "upstream_5xx",
            Plan::UpstreamCut => "upstream_cut",
        }
    }
}

/// A small deterministic generator (splitmix64): the same seed gives the same mix.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Planned {
    index: usize,
    plan: Plan,
    headers: Vec<(String, String)>,
    body: Bytes,
    abort_after: Option<usize>,
}

/// The rates of faults and aborts in a phase.
#[derive(Clone, Copy)]
struct Rates {
    abort: f64,
    fault: f64,
}

fn plan_request(index: usize, run: &str, rates: Rates, mix: &mut Mix) -> Planned {
    let roll = mix.unit();
    let plan = if roll < rates.fault / 2.0 {
        Plan::Upstream5xx
    } else if roll < rates.fault {
        Plan::UpstreamCut
    } else if roll < rates.fault + rates.abort {
        Plan::ClientAbort
    } else if mix.below(2) == 0 {
        Plan::Stream
    } else {
        Plan::Json
    };
    let stream = plan != Plan::Json;
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-request-id".to_owned(), format!("{run}-req-{index}")),
        ("x-mock-id".to_owned(), format!("{run}-{index}")),
    ];
    let mut abort_after = None;
    match plan {
        Plan::Stream | Plan::Json => {
            headers.push(("x-mock-events".into(), (1 + mix.below(40)).to_string()));
            headers.push(("x-mock-event-bytes".into(), mix.below(64).to_string()));
        }
        Plan::ClientAbort => {
            // A long, paced stream the client leaves after its first few hundred bytes,
            // while the upstream still has most of it to send.
            headers.push(("x-mock-events".into(), "60".into()));
            headers.push(("x-mock-delay-us".into(), "2000".into()));
            abort_after = Some(200 + mix.below(400) as usize);
        }
        Plan::Upstream5xx => {
            let status = [500, 502, 503][mix.below(3) as usize];
            headers.push(("x-mock-status".into(), status.to_string()));
        }
        Plan::UpstreamCut => {
            headers.push(("x-mock-events".into(), "40".into()));
            headers.push((
                "x-mock-die-after".into(),
                (50 + mix.below(2000)).to_string(),
            ));
        }
    }
    // Request bodies vary in size and content, as prompts do.
    let prompt: String = (0..mix.below(600))
        .map(|i| char::from(b'a' + ((i + index as u64) % 26) as u8))
        .collect();
    let body = json!({
        "model": "mock-model",
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    })
    .to_string();
    Planned {
        index,
        plan,
        headers,
        body: Bytes::from(body),
        abort_after,
    }
}

/// How many verified receipts a soak report carries for checks by other implementations.
const SAMPLE: usize = 25;

#[derive(Default)]
struct SoakBook {
    /// Per plan: requests sent.
    sent: HashMap<&'static str, usize>,
    /// Completed responses whose signature verified.
    verified: usize,
    /// The first verified receipts, `(text, signature)`, for a check by another
    /// implementation than signet's.
    sample: Vec<(String, String)>,
    /// Ids that must have no signature, checked at the end.
    must_be_unsigned: Vec<String>,
    /// Request ids expected in the access log with their expected `signed=` value.
    expected_log: HashMap<String, bool>,
    violations: Vec<String>,
    hung: usize,
    /// Per plan: how the requests actually ended.
    outcomes: HashMap<String, usize>,
}

impl SoakBook {
    fn violation(&mut self, text: String) {
        if self.violations.len() < 50 {
            self.violations.push(text);
        } else if self.violations.len() == 50 {
            self.violations
                .push("(more violations not shown)".to_owned());
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a completed exchange's receipt: its `(text, signature)`, or the violation.
async fn check_receipt(
    target: SocketAddr,
    id: &str,
    request: &[u8],
    received: &[u8],
    address: &str,
) -> Result<(String, String), String> {
    let (status, body) = match get(target, &format!("/v1/signature/{id}")).await {
        Ok(r) => r,
        Err(e) => return Err(format!("{id}: signature lookup failed: {e}")),
    };
    if status != 200 {
        return Err(format!(
            "{id}: completed but no signature (status {status})"
        ));
    }
    let receipt: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Err(format!("{id}: receipt is not JSON: {e}")),
    };
    let expected = format!("{}:{}", hex_sha256(request), hex_sha256(received));
    if receipt["text"] != expected.as_str() {
        return Err(format!(
            "{id}: signed text {} is not over the bytes received ({expected})",
            receipt["text"]
        ));
    }
    let signature = receipt["signature"].as_str().unwrap_or_default();
    let recovered = signet_core::signing::RecoverableSignature::parse(signature)
        .ok()
        .and_then(|sig| signet_core::signing::recover_address(expected.as_bytes(), &sig).ok())
        .map(|a| a.to_checksum());
    if recovered.as_deref() != Some(address) {
        return Err(format!(
            "{id}: signature recovers to {recovered:?}, not {address}"
        ));
    }
    Ok((expected, signature.to_owned()))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU seconds (user + system) used so far by a process.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) / ticks)
}

async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = get(admin, "/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).filter(|r| r.starts_with(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn soak(args: SoakArgs) -> ExitCode {
    match soak_report(args).await {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            if report["violations"].as_array().is_some_and(Vec::is_empty) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("signet-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `signet-load soak` with these arguments (as the binary takes them after `soak`) on a
/// runtime of its own, and returns its report; a report with violations is still `Ok`.
pub fn soak_in_process<I, S>(args: I) -> Result<Value, String>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let argv = ["signet-load".into(), "soak".into()]
        .into_iter()
        .chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let Command::Soak(args) = cli.command else {
        return Err("not a soak".to_owned());
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(soak_report(args))
}

/// The soak itself: its JSON report, or why it could not run.
async fn soak_report(args: SoakArgs) -> Result<Value, String> {
    let started = Instant::now();
    let run = format!("soak{}", std::process::id());
    let address = match get(args.target, "/health").await {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["signing_address"].as_str().map(str::to_owned)),
        _ => None,
    };
    let Some(address) = address else {
        return Err(format!("the gateway at {} is not healthy", args.target));
    };

    // Warm up (pools, allocator arenas), then take the baseline.
    let warm = (args.requests / 20).clamp(100, 2000);
    let calm = Rates {
        abort: 0.0,
        fault: 0.0,
    };
    run_phase(&args, &format!("{run}w"), warm, &address, calm).await;
    let Some(baseline_kib) = rss_kib(args.pid) else {
        return Err(format!("no process {}", args.pid));
    };
    let entries_before = metric(args.admin, "signet_signature_store_entries")
        .await
        .unwrap_or(0.0);

    let peak = Arc::new(AtomicU64::new(baseline_kib));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), args.pid);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while sampling.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
            }
        })
    };

    let load_started = Instant::now();
    let rates = Rates {
        abort: args.abort_rate,
        fault: args.fault_rate,
    };
    let mut book = run_phase(&args, &run, args.requests, &address, rates).await;
    let load_seconds = load_started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;

    // Quiescence: nothing in flight any more, and every request has its access line.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_flight = metric(args.admin, "signet_completions_in_flight").await;
        if in_flight == Some(0.0) {
            break;
        }
        if Instant::now() > deadline {
            book.violation(format!("completions still in flight: {in_flight:?}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_access_log(&args, &mut book);

    // No aborted or failed request may have a signature.
    let unsigned = std::mem::take(&mut book.must_be_unsigned);
    let wrongly_signed = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(Mutex::new(unsigned.to_vec()));
    let mut checkers = Vec::new();
    for _ in 0..args.concurrency.min(32) {
        let (queue, wrongly_signed, target) = (queue.clone(), wrongly_signed.clone(), args.target);
        checkers.push(tokio::spawn(async move {
            let mut connection = Connection::new(target);
            let mut found = Vec::new();
            loop {
                let Some(id) = queue.lock().await.pop() else {
                    return found;
                };
                let path = format!("/v1/signature/{id}");
                match connection
                    .exchange("GET", &path, &[], Bytes::new(), None)
                    .await
                {
                    Ok(e) if e.status == 404 => {}
                    other => {
                        wrongly_signed.fetch_add(1, Ordering::Relaxed);
                        found.push(format!(
                            "{id}: aborted or failed, yet lookup gave {:?}",
                            other.map(|e| e.status)
                        ));
                    }
                }
            }
        }));
    }
    for checker in checkers {
        match checker.await {
            Ok(found) => {
                for f in found {
                    book.violation(f);
                }
            }
            Err(e) => book.violation(format!("an unsigned-outcome checker failed: {e}")),
        }
    }

    let final_kib = rss_kib(args.pid).unwrap_or(0);
    let entries_after = metric(args.admin, "signet_signature_store_entries")
        .await
        .unwrap_or(0.0);
    // The store keeps each signature for its TTL by design; allow 256 B per record (the
    // documented ceiling) on top of the slack.
    let retained_kib = ((entries_after - entries_before).max(0.0) * 256.0 / 1024.0) as u64;
    let allowed_kib = baseline_kib + retained_kib + args.rss_slack_mib * 1024;
    if final_kib > allowed_kib {
        book.violation(format!(
            "RSS {final_kib} KiB did not come back near the baseline {baseline_kib} KiB \
             (+{retained_kib} KiB for {} stored signatures, +{} MiB slack)",
            entries_after - entries_before,
            args.rss_slack_mib
        ));
    }
    if book.hung > 0 {
        book.violation(format!("{} requests hung", book.hung));
    }

    let report = json!({
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": (load_seconds * 10.0).round() / 10.0,
        "requests_per_second": (args.requests as f64 / load_seconds).round(),
        "sent_by_plan": book.sent,
        "outcomes": book.outcomes,
        "completed_and_verified": book.verified,
        "signing_address": address,
        "receipt_sample": book
            .sample
            .iter()
            .map(|(text, signature)| json!({"text": text, "signature": signature}))
            .collect::<Vec<_>>(),
        "checked_unsigned": unsigned.len(),
        "wrongly_signed": wrongly_signed.load(Ordering::Relaxed),
        "hung": book.hung,
        "rss_kib": {
            "baseline": baseline_kib,
            "peak": peak.load(Ordering::Relaxed),
            "final": final_kib,
            "store_entries_added": entries_after - entries_before,
            "allowed": allowed_kib,
        },
        "violations": book.violations,
        "wall_seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    Ok(report)
}

/// Runs `count` requests at the configured concurrency and checks each as it ends.
async fn run_phase(
    args: &SoakArgs,
    run: &str,
    count: usize,
    address: &str,
    rates: Rates,
) -> SoakBook {
    let mut mix = Mix(args.seed ^ (run.len() as u64));
    let planned: Vec<Planned> = (0..count)
        .map(|i| plan_request(i, run, rates, &mut mix))
        .collect();
    let queue = Arc::new(Mutex::new(planned.into_iter().rev().collect::<Vec<_>>()));
    let book = Arc::new(Mutex::new(SoakBook::default()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (queue, book) = (queue.clone(), book.clone());
        let (target, timeout, address, run) = (
            args.target,
            args.request_timeout,
            address.to_owned(),
            run.to_owned(),
        );
        workers.push(tokio::spawn(async move {
            let mut connection = Connection::new(target);
            loop {
                let Some(p) = queue.lock().await.pop() else {
                    return;
                };
                let id = format!("{run}-{}", p.index);
                let request_id = format!("{run}-req-{}", p.index);
                let outcome = tokio::time::timeout(
                    timeout,
                    connection.exchange(
                        "POST",
                        "/v1/chat/completions",
                        &p.headers,
                        p.body.clone(),
                        p.abort_after,
                    ),
                )
                .await;
                let (ended, should_verify) = match &outcome {
                    Err(_) => ("hung", false),
                    Ok(Err(_)) => ("connection_error", false),
                    Ok(Ok(e)) => match (&e.body, e.status) {
                        (Ok(_), 200) => ("completed", true),
                        (Ok(_), s) if s >= 500 => ("upstream_error_passed_through", false),
                        (Ok(_), _) => ("other_status", false),
                        (Err(why), _) if why.contains("aborted by the client") => {
                            ("client_left", false)
                        }
                        (Err(_), _) => ("cut_mid_body", false),
                    },
                };
                let checked = if should_verify {
                    let received = match &outcome {
                        Ok(Ok(e)) => e.body.as_deref().unwrap_or_default(),
                        _ => &[],
                    };
                    Some(check_receipt(target, &id, &p.body, received, &address).await)
                } else {
                    None
                };
                let mut book = book.lock().await;
                *book.sent.entry(p.plan.name()).or_default() += 1;
                *book
                    .outcomes
                    .entry(format!("{}:{ended}", p.plan.name()))
                    .or_default() += 1;
                let expected_ending = match p.plan {
                    Plan::Stream | Plan::Json => "completed",
                    Plan::ClientAbort => "client_left",
                    Plan::Upstream5xx => "upstream_error_passed_through",
                    Plan::UpstreamCut => "cut_mid_body",
                };
                if ended == "hung" {
                    book.hung += 1;
                    // Reconnect: the hung exchange's connection is gone with its future.
                    connection = Connection::new(target);
                } else if ended != expected_ending {
                    book.violation(format!(
                        "{id}: planned {} but it ended {ended}",
                        p.plan.name()
                    ));
                }
                if let Some(checked) = checked {
                    match checked {
                        Ok(receipt) => {
                            book.verified += 1;
                            if book.sample.len() < SAMPLE {
                                book.sample.push(receipt);
                            }
                        }
                        Err(v) => book.violation(v),
                    }
                    book.expected_log.insert(request_id, true);
                } else {
                    book.must_be_unsigned.push(id);
                    book.expected_log.insert(request_id, false);
                }
            }
        }));
    }
    // A worker that panicked took the request it held out of the books: that is a
    // violation, never a silent loss.
    let mut panicked = Vec::new();
    for worker in workers {
        if let Err(e) = worker.await {
            panicked.push(format!("a soak worker failed: {e}"));
        }
    }
    let mut book = match Arc::try_unwrap(book) {
        Ok(book) => book.into_inner(),
        Err(_) => {
            let mut book = SoakBook::default();
            book.violation("the books are still shared after every worker ended".to_owned());
            return book;
        }
    };
    for p in panicked {
        book.violation(p);
    }
    let booked: usize = book.sent.values().sum();
    if booked != count {
        book.violation(format!("{count} requests planned, {booked} in the books"));
    }
    book
}

/// Every request must have exactly the access line its outcome calls for.
fn check_access_log(args: &SoakArgs, book: &mut SoakBook) {
    let text = match std::fs::read_to_string(&args.log) {
        Ok(t) => t,
        Err(e) => {
            book.violation(format!("cannot read {}: {e}", args.log.display()));
            return;
        }
    };
    let mut seen: HashMap<&str, bool> = HashMap::new();
    for line in text.lines().filter(|l| l.contains("signet::access")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|w| w.strip_prefix('=')))
        };
        // The soak's own ids travel as the client's `x-request-id`, which signet logs as
        // `client_request_id` (its own id is another).
        if let (Some(request_id), Some(signed)) = (field("client_request_id"), field("signed")) {
            seen.insert(request_id, signed == "true");
        }
    }
    let expected = std::mem::take(&mut book.expected_log);
    let mut missing = 0;
    let mut wrong = Vec::new();
    for (request_id, should_be_signed) in &expected {
        match seen.get(request_id.as_str()) {
            None => missing += 1,
            Some(signed) if signed != should_be_signed => wrong.push(format!(
                "{request_id}: access log says signed={signed}, expected {should_be_signed}"
            )),
            Some(_) => {}
        }
    }
    if missing > 0 {
        book.violation(format!("{missing} requests have no access line"));
    }
    for w in wrong {
        book.violation(w);
    }
}

// --- bench ------------------------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn bench(args: BenchArgs) -> ExitCode {
    let body = Bytes::from(
        json!({
            "model": e2ee::MODEL,
            "stream": args.stream,
            "messages": [{"role": "user", "content": e2ee::PROMPT}],
        })
        .to_string(),
    );
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-mock-events".to_owned(), args.events.to_string()),
        (
            "x-mock-event-bytes".to_owned(),
            args.event_bytes.to_string(),
        ),
        ("x-mock-delay-us".to_owned(), args.delay_us.to_string()),
    ];
    if args.write_bytes > 0 {
        headers.push(("x-mock-chunks".to_owned(), args.write_bytes.to_string()));
    }
    let client = match args.e2ee {
        None => None,
        Some(suite) => match e2ee::E2eeClient::from_attestation(args.target, suite.suite()).await {
            Ok(client) => Some(client),
            Err(e) => {
                eprintln!("signet-load: --e2ee: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Some(client) = &client
        && args.check
    {
        match check_e2ee(&args, client, &headers, body.clone()).await {
            Ok(bytes) => eprintln!(
                "signet-load: --check: the encrypted answer opens to the plain one ({bytes} bytes of content)"
            ),
            Err(e) => {
                eprintln!("signet-load: --check: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Every phase's requests, sealed before it starts when encrypted.
    let stream = args.stream;
    let phase = |count: usize| {
        Arc::new(match &client {
            None => PhaseRequests::Same(headers.clone(), body.clone()),
            Some(client) => PhaseRequests::Each(
                (0..count)
                    .map(|_| {
                        let sealed = client.prepare(&headers, stream);
                        (sealed.headers, sealed.body)
                    })
                    .collect(),
            ),
        })
    };
    let args = Arc::new(args);
    let run = |requests: Arc<PhaseRequests>, count: usize, measure: bool| {
        let args = args.clone();
        async move {
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = Vec::new();
            for _ in 0..args.concurrency {
                let (args, requests, next) = (args.clone(), requests.clone(), next.clone());
                workers.push(tokio::spawn(async move {
                    let mut connection = Connection::new(args.target);
                    let mut samples = Vec::new();
                    let mut errors = 0usize;
                    let mut bytes = 0usize;
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            break;
                        }
                        let Some((headers, body)) = requests.get(index) else {
                            errors += 1;
                            continue;
                        };
                        match connection
                            .exchange("POST", &args.path, headers, body, None)
                            .await
                        {
                            Ok(e) if e.status == 200 && e.body.is_ok() => {
                                bytes += e.body.as_ref().map_or(0, Vec::len);
                                if measure {
                                    samples.push((
                                        e.first_byte.unwrap_or(e.total).as_secs_f64() * 1e3,
                                        e.total.as_secs_f64() * 1e3,
                                    ));
                                }
                            }
                            _ => errors += 1,
                        }
                    }
                    (samples, errors, bytes)
                }));
            }
            let mut samples = Vec::new();
            let mut errors = 0;
            let mut bytes = 0;
            for w in workers {
                if let Ok((s, e, b)) = w.await {
                    samples.extend(s);
                    errors += e;
                    bytes += b;
                }
            }
            (samples, errors, bytes)
        }
    };
    let _ = run(phase(args.warmup), args.warmup, false).await;
    let measured = phase(args.requests);
    let cpu_before: Vec<Option<f64>> = args.cpu_pid.iter().map(|p| cpu_seconds(*p)).collect();
    let started = Instant::now();
    let (samples, errors, bytes) = run(measured, args.requests, true).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_used: f64 = args
        .cpu_pid
        .iter()
        .zip(cpu_before)
        .filter_map(|(p, before)| Some(cpu_seconds(*p)? - before?))
        .sum();
    let mut first: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let mut total: Vec<f64> = samples.iter().map(|s| s.1).collect();
    first.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    let summary = |v: &[f64]| {
        json!({
            "p50": (percentile(v, 50.0) * 1000.0).round() / 1000.0,
            "p90": (percentile(v, 90.0) * 1000.0).round() / 1000.0,
            "p99": (percentile(v, 99.0) * 1000.0).round() / 1000.0,
            "max": (v.last().copied().unwrap_or(0.0) * 1000.0).round() / 1000.0,
        })
    };
    let report = json!({
        "label": args.label,
        "target": args.target.to_string(),
        "stream": args.stream,
        "events": args.events,
        "delay_us": args.delay_us,
        "write_bytes": args.write_bytes,
        "e2ee": args.e2ee.map(|suite| suite.suite().algo()),
        "concurrency": args.concurrency,
        "requests": args.requests,
        "errors": errors,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "requests_per_second": (args.requests as f64 / seconds * 10.0).round() / 10.0,
        "mib_per_second": (bytes as f64 / seconds / 1048576.0 * 10.0).round() / 10.0,
        "first_byte_ms": summary(&first),
        "total_ms": summary(&total),
        "cpu_seconds": (cpu_used * 1000.0).round() / 1000.0,
        "cpu_us_per_request": if args.cpu_pid.is_empty() { Value::Null } else {
            json!((cpu_used / args.requests as f64 * 1e6 * 10.0).round() / 10.0)
        },
    });
    println!("{report}");
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What each request of a phase sends: the same for plain traffic, its own for E2EE.
enum PhaseRequests {
    Same(Vec<(String, String)>, Bytes),
    Each(Vec<(Vec<(String, String)>, Bytes)>),
}

impl PhaseRequests {
    fn get(&self, index: usize) -> Option<(&[(String, String)], Bytes)> {
        match self {
            PhaseRequests::Same(headers, body) => Some((headers, body.clone())),
            PhaseRequests::Each(requests) => requests
                .get(index)
                .map(|(headers, body)| (headers.as_slice(), body.clone())),
        }
    }
}

/// `--check`: one encrypted request and the same request in plain; the encrypted answer's
/// content, opened with the client key, must be the plain answer's (and not empty). Returns
/// the content's length.
async fn check_e2ee(
    args: &BenchArgs,
    client: &e2ee::E2eeClient,
    headers: &[(String, String)],
    plain_body: Bytes,
) -> Result<usize, String> {
    let mut connection = Connection::new(args.target);
    let answer = |e: Exchange, what: &str| -> Result<Vec<u8>, String> {
        if e.status != 200 {
            return Err(format!("the {what} request answered {}", e.status));
        }
        e.body.map_err(|b| format!("the {what} answer broke: {b}"))
    };
    let plain = connection
        .exchange("POST", &args.path, headers, plain_body, None)
        .await?;
    let plain = e2ee::plain_answer(&answer(plain, "plain")?)?;
    let sealed = client.prepare(headers, args.stream);
    let encrypted = connection
        .exchange(
            "POST",
            &args.path,
            &sealed.headers,
            sealed.body.clone(),
            None,
        )
        .await?;
    let encrypted = answer(encrypted, "encrypted")?;
    let opened = client.open_answer(&sealed, &encrypted)?;
    if opened.is_empty() || opened != plain {
        return Err(format!(
            "the opened content ({} bytes) is not the plain answer's ({} bytes)",
            opened.len(),
            plain.len()
        ));
    }
    Ok(opened.len())
}

// --- hold -------------------------------------------------------------------------------

async fn hold(args: HoldArgs) -> ExitCode {
    let body = Bytes::from(r#"{"model":"mock-model","stream":true,"messages":[]}"#);
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-mock-events".to_owned(), "3".to_owned()),
        (
            "x-mock-delay-ms".to_owned(),
            args.event_delay_ms.to_string(),
        ),
    ];
    // Settle first: one stream through, so pools and buffers of the first request exist.
    let mut warm = Connection::new(args.target);
    let _ = warm
        .exchange(
            "POST",
            "/v1/chat/completions",
            &headers[..2],
            body.clone(),
            None,
        )
        .await;
    drop(warm);
    let Some(before) = rss_kib(args.pid) else {
        eprintln!("signet-load: no process {}", args.pid);
        return ExitCode::FAILURE;
    };
    let opened = Instant::now();
    let mut open = Vec::with_capacity(args.streams);
    let mut failures = 0usize;
    let mut pending = Vec::new();
    for _ in 0..args.streams {
        let (target, headers, body) = (args.target, headers.clone(), body.clone());
        pending.push(tokio::spawn(async move {
            let mut connection = Connection::new(target);
            let response = connection
                .send("POST", "/v1/chat/completions", &headers, body)
                .await?;
            let mut incoming = response.into_body();
            // The first event: the stream is open end to end.
            loop {
                match incoming.frame().await {
                    Some(Ok(frame)) if frame.is_data() => break,
                    Some(Ok(_)) => continue,
                    other => return Err(format!("stream ended early: {other:?}")),
                }
            }
            Ok::<_, String>((connection, incoming))
        }));
    }
    for task in pending {
        match task.await {
            Ok(Ok(stream)) => open.push(stream),
            _ => failures += 1,
        }
    }
    let open_seconds = opened.elapsed().as_secs_f64();
    let with_streams = rss_kib(args.pid).unwrap_or(0);
    let held = open.len();
    drop(open);
    let per_stream = (with_streams.saturating_sub(before) as f64 * 1024.0) / held.max(1) as f64;
    let report = json!({
        "streams": held,
        "failed": failures,
        "seconds_to_open": (open_seconds * 100.0).round() / 100.0,
        "rss_kib_before": before,
        "rss_kib_with_streams": with_streams,
        "bytes_per_stream": per_stream.round(),
    });
    println!("{report}");
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
