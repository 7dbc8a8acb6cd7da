//! A fleet of replicas sharing one Redis for signatures: any replica answers for any other,
//! records carry the signer's address and the TTL, and a Redis outage loses no signature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway redis-server on a port of its own, no persistence.
struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn start_on(port: u16, dir: tempfile::TempDir) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh installs it)");
        let server = RedisServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn start() -> Self {
        Self::start_on(free_port(), tempfile::tempdir().unwrap())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (port, dir)
    }

    async fn keys(&self, pattern: &str) -> Vec<(String, i64)> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.push((key, ttl));
        }
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(upstream: &Upstream, redis_url: &str, prefix: &str) -> Gateway {
    Gateway::start_with(
        &upstream.url(),
        &format!(
            "  signatures:\n    ttl: 120s\n    backend: redis\n    redis:\n      url: \"{redis_url}\"\n      key_prefix: \"{prefix}\"\n      lookup_timeout: 300ms\n"
        ),
    )
}

/// Waits until `gateway` can serve the signature for `id` (the writer is asynchronous).
async fn fetch_eventually(gateway: &Gateway, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = gateway.signature(id).await;
        if reply.status == 200 {
            return reply.json();
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached the shared store: {}",
            String::from_utf8_lossy(&reply.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_served_by_one_replica_is_found_on_another() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let a = replica(&upstream, &redis.url(), "signet:test-fleet:");
    let b = replica(&upstream, &redis.url(), "signet:test-fleet:");
    let a_address = a.signing_address().await;
    assert_ne!(
        a_address,
        b.signing_address().await,
        "each replica has its own key"
    );

    let body = br#"{"stream":true}"#;
    let reply = a
        .post("/v1/chat/completions", &[("x-mock-id", "fleet-1")], body)
        .await;
    assert_eq!(reply.status, 200);
    let receipt = fetch_eventually(&b, "fleet-1").await;
    assert_receipt(&receipt, body, &reply.body, &a_address);

    // The signature, and the ACI receipt under its receipt id and its response id.
    let receipt_id = reply.headers["x-receipt-id"].to_str().unwrap().to_owned();
    fetch_receipt_eventually(&b, &receipt_id, &[]).await;
    let mut keys = redis.keys("signet:test-fleet:*").await;
    keys.sort();
    let names: Vec<&str> = keys.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "signet:test-fleet:aci-chat/fleet-1".to_owned(),
            format!("signet:test-fleet:aci-receipt/{receipt_id}"),
            "signet:test-fleet:fleet-1".to_owned(),
        ],
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|(_, ttl)| (1..=120).contains(ttl)),
        "written with the TTL: {keys:?}"
    );

    // Another deployment on the same Redis does not see this one's signatures.
    let other = replica(&upstream, &redis.url(), "signet:other-model:");
    assert_eq!(other.signature("fleet-1").await.status, 404);
}

async fn receipt(gateway: &Gateway, id: &str, headers: &[(&str, &str)]) -> Reply {
    request(
        gateway.addr,
        "GET",
        &format!("/v1/aci/receipts/{id}"),
        headers,
        Vec::new(),
    )
    .await
}

/// Waits until `gateway` can serve the ACI receipt `id` to `headers`' credential.
async fn fetch_receipt_eventually(gateway: &Gateway, id: &str, headers: &[(&str, &str)]) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = receipt(gateway, id, headers).await;
        if reply.status == 200 {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "receipt {id} never reached the shared store: {}",
            String::from_utf8_lossy(&reply.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An ACI receipt made on one replica is served by another byte for byte (signed by the
/// first replica's receipt key, naming its keyset), to the credential that made the request
/// only, by receipt id and by response id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aci_receipt_made_on_one_replica_is_served_by_another() {
    use signet_core::aci::{self, AciReport};
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let fleet = |redis_url: &str| {
        Gateway::start_with(
            &upstream.url(),
            &format!(
                "  auth:\n    tokens: [\"token-alice-0000001\", \"token-bob-000000002\"]\n  signatures:\n    ttl: 120s\n    backend: redis\n    redis:\n      url: \"{redis_url}\"\n      key_prefix: \"signet:aci-fleet:\"\n      lookup_timeout: 300ms\n"
            ),
        )
    };
    let (a, b) = (fleet(&redis.url()), fleet(&redis.url()));
    let alice = ("authorization", "Bearer token-alice-0000001");
    let bob = ("authorization", "Bearer token-bob-000000002");
    let a_report: AciReport = serde_json::from_slice(
        &request(a.addr, "GET", "/v1/aci/attestation", &[], Vec::new())
            .await
            .body,
    )
    .unwrap();
    let body = br#"{"model":"m-fleet","stream":true}"#;
    let reply = a
        .post(
            "/v1/chat/completions",
            &[alice, ("x-mock-id", "aci-fleet-1")],
            body,
        )
        .await;
    assert_eq!(reply.status, 200);
    let receipt_id = reply.headers["x-receipt-id"].to_str().unwrap().to_owned();

    let on_a = receipt(&a, &receipt_id, &[alice]).await;
    assert_eq!(on_a.status, 200);
    let on_b = fetch_receipt_eventually(&b, &receipt_id, &[alice]).await;
    assert_eq!(on_b.body, on_a.body, "the same bytes and signature");
    assert_eq!(receipt(&b, "aci-fleet-1", &[alice]).await.body, on_a.body);
    // It verifies under A's attested keyset, B's is another.
    let verified = aci::verify_receipt(
        &on_b.json(),
        &a_report.attestation.workload_keyset,
        &a_report.workload_keyset_digest,
    )
    .unwrap();
    assert_eq!(verified.response_returned, aci::sha256_digest(&reply.body));
    assert_eq!(verified.request_received, aci::sha256_digest(body));
    let b_report = request(b.addr, "GET", "/v1/aci/attestation", &[], Vec::new())
        .await
        .json();
    assert_ne!(
        b_report["workload_keyset_digest"], a_report.workload_keyset_digest,
        "each replica has its own receipt key"
    );
    // Bound to the same credential on B: another is told not_found, as for an unknown id.
    for id in [receipt_id.as_str(), "aci-fleet-1"] {
        let wrong = receipt(&b, id, &[bob]).await;
        assert_eq!(wrong.status, 404, "{id}");
        let unknown = receipt(&b, "rcpt-nothing-here", &[bob]).await;
        assert_eq!(wrong.body, unknown.body);
        assert_eq!(receipt(&b, id, &[]).await.status, 401, "{id}");
    }
}

/// A fleet on `signing.key_source: dstack` behind one name: every replica has the same
/// signing address and ACI keyset, so a receipt or signature one replica made verifies under
/// the attestation of whichever replica a client asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_kms_keys_shares_one_keyset_and_serves_its_receipts() {
    use signet_core::aci::{self, AciReport};
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let agent_dir = tempfile::tempdir().unwrap();
    let socket = fake_kms_agent(agent_dir.path()).await;
    // One keyset needs one not_after: an absolute time, not a lifetime from each start.
    let not_after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10 * 24 * 3600;
    let fleet = || {
        Gateway::start_with_attestation(
            &upstream.url(),
            &format!(
                "    mode: dev\n    gpu: none\n    dstack_socket: {}\n",
                socket.display()
            ),
            &format!(
                "  aci:\n    not_after: {not_after}\n  signing:\n    key_source: dstack\n  signatures:\n    ttl: 120s\n    backend: redis\n    redis:\n      url: \"{}\"\n      key_prefix: \"signet:kms-fleet:\"\n      lookup_timeout: 300ms\n",
                redis.url()
            ),
        )
    };
    let (a, b) = (fleet(), fleet());
    let address = a.signing_address().await;
    assert_eq!(
        b.signing_address().await,
        address,
        "one address for the fleet"
    );
    let report_of = |gateway: &Gateway| {
        let addr = gateway.addr;
        async move {
            let body = request(addr, "GET", "/v1/aci/attestation", &[], Vec::new())
                .await
                .body;
            serde_json::from_slice::<AciReport>(&body).unwrap()
        }
    };
    let (a_report, b_report) = (report_of(&a).await, report_of(&b).await);
    assert_eq!(
        a_report.workload_keyset_digest,
        b_report.workload_keyset_digest
    );

    let body = br#"{"model":"m-kms","stream":false}"#;
    let reply = a
        .post(
            "/v1/chat/completions",
            &[("x-mock-id", "kms-fleet-1")],
            body,
        )
        .await;
    assert_eq!(reply.status, 200);
    let receipt_id = reply.headers["x-receipt-id"].to_str().unwrap().to_owned();
    let on_b = fetch_receipt_eventually(&b, &receipt_id, &[]).await;
    // Checked against B's own attestation: the fleet's keyset.
    let verified = aci::verify_receipt(
        &on_b.json(),
        &b_report.attestation.workload_keyset,
        &b_report.workload_keyset_digest,
    )
    .unwrap();
    assert_eq!(verified.response_returned, aci::sha256_digest(&reply.body));
    let signature = fetch_eventually(&b, "kms-fleet-1").await;
    assert_receipt(&signature, body, &reply.body, &address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_loses_no_signature_and_writes_resume() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let admin = free_port();
    let a = Gateway::start_with(
        &upstream.url(),
        &format!(
            "  admin:\n    listen: \"127.0.0.1:{admin}\"\n  signatures:\n    ttl: 120s\n    backend: redis\n    redis:\n      url: \"{}\"\n      key_prefix: \"signet:outage:\"\n      lookup_timeout: 300ms\n",
            redis.url()
        ),
    );
    let b = replica(&upstream, &redis.url(), "signet:outage:");
    let a_address = a.signing_address().await;
    let body = br#"{"stream":true}"#;
    a.post(
        "/v1/chat/completions",
        &[("x-mock-id", "before-outage")],
        body,
    )
    .await;
    fetch_eventually(&b, "before-outage").await;

    // Redis dies: responses keep flowing and are signed; A still answers for itself.
    let (port, dir) = redis.stop();
    for i in 0..5 {
        let id = format!("during-outage-{i}");
        let reply = a
            .post("/v1/chat/completions", &[("x-mock-id", &id)], body)
            .await;
        assert_eq!(reply.status, 200);
        let receipt = a.signature(&id).await;
        assert_eq!(receipt.status, 200, "kept locally");
        assert_receipt(&receipt.json(), body, &reply.body, &a_address);
    }
    let missing = b.signature("during-outage-0").await;
    missing.assert_envelope(503, "signature_store_unavailable");
    a.wait_for_log_line(&["shared signature store", "Redis"]);
    let during = scrape(admin).await;
    assert!(
        metric(
            &during,
            "signet_shared_store_writes_total{result=\"error\"}"
        ) >= 1.0
    );
    assert!(
        metric(&during, "signet_shared_store_backlog") >= 1.0,
        "records wait for Redis: {during}"
    );

    // Redis returns: the records made meanwhile are written, B finds them.
    let redis = RedisServer::start_on(port, dir);
    for i in 0..5 {
        let receipt = fetch_eventually(&b, &format!("during-outage-{i}")).await;
        assert_eq!(receipt["signing_address"], a_address.as_str());
    }
    assert_eq!(redis.keys("signet:outage:during-outage-*").await.len(), 5);

    // Everything written: nothing left waiting, nothing dropped. (The gauge moves when
    // Redis's reply reaches the writer, a moment after B could read the records.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let text = scrape(admin).await;
        if metric(&text, "signet_shared_store_backlog") == 0.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "backlog never drained: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(metric(&after, "signet_shared_store_dropped_total"), 0.0);
    assert!(metric(&after, "signet_shared_store_writes_total{result=\"ok\"}") >= 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stream_leaves_nothing_in_the_shared_store() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let a = replica(&upstream, &redis.url(), "signet:retract:");
    // A client that leaves at once: nothing is signed, so nothing may reach Redis.
    let addr = a.addr;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let body = br#"{"stream":true}"#;
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nx-mock-id: abandoned-shared\r\nx-mock-events: 20000\r\nx-mock-event-bytes: 200\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        stream.shutdown(std::net::Shutdown::Both).unwrap();
    })
    .await
    .unwrap();
    a.wait_for_log_line(&["id=abandoned-shared", "signed=false"]);
    assert!(redis.keys("signet:retract:*").await.is_empty());
}

/// The `X-Receipt-Id` of a raw HTTP/1.1 response head.
fn receipt_id_in(raw: &[u8]) -> String {
    let head = String::from_utf8_lossy(raw);
    head.lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-receipt-id")
                .then(|| value.trim().to_owned())
        })
        .expect("the response head names its receipt")
}

async fn lookup_until(
    store: &signet::shared_store::SharedStore,
    id: &str,
    wanted: Option<&signet_core::receipt::SignatureReceipt>,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(found) = store.lookup(id).await
            && found.as_ref() == wanted
        {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two replicas share one key space: a replica never overwrites another's record for the
/// same id (SET NX), and withdrawing its own record never deletes another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_never_overwrites_or_withdraws_another_replicas_record() {
    use signet::shared_store::{RedisSettings, SharedStore};
    use signet_core::receipt::SignatureReceipt;
    use std::sync::Arc;
    let redis = RedisServer::start();
    let settings = RedisSettings {
        url: redis.url(),
        password: None,
        key_prefix: "fleet:".to_owned(),
        lookup_timeout: Duration::from_secs(2),
        backlog: 100,
    };
    let a = Arc::new(SharedStore::new(settings.clone()).unwrap());
    let b = Arc::new(SharedStore::new(settings).unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for store in [a.clone(), b.clone()] {
        let stopped = stopped.clone();
        tokio::spawn(async move { store.run_writer(stopped).await });
    }
    let receipt = |who: &str| SignatureReceipt {
        text: format!("{who}:text"),
        signature: format!("0x{who}"),
        signing_address: format!("0x{who}-address"),
        signing_algo: "ecdsa".to_owned(),
    };
    let (ours, theirs) = (receipt("a"), receipt("b"));
    let ttl = Duration::from_secs(60);
    a.publish("chatcmpl-x", &ours, ttl);
    lookup_until(&a, "chatcmpl-x", Some(&ours)).await;
    // b writes the same id, then takes its own record back; its writer keeps order, so once
    // b's marker is visible, both of those writes have been applied.
    b.publish("chatcmpl-x", &theirs, ttl);
    b.withdraw("chatcmpl-x", &theirs);
    b.publish("marker", &theirs, ttl);
    lookup_until(&b, "marker", Some(&theirs)).await;
    assert_eq!(b.lookup("chatcmpl-x").await.unwrap(), Some(ours.clone()));
    // a's own withdrawal does remove it.
    a.withdraw("chatcmpl-x", &ours);
    lookup_until(&a, "chatcmpl-x", None).await;
    let _ = stop.send(true);
}

/// A client that reads all but the last bytes of a stream and resets: the signature made when
/// the upstream's last bytes arrived is taken back because they could not be written to the
/// client. The lookup is a 404, the access line says unsigned, and the record that went to
/// Redis is deleted again: once the writer is done, Redis holds nothing.
///
/// The client half-closes before it resets, as an SDK that is done sending does: signet reads
/// that end of the request and keeps going (the response may still be wanted), so the reset
/// can only surface when it writes the last bytes, after signing. (A reset alone may be
/// noticed while signet waits for the upstream, before anything is signed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_whose_last_bytes_never_reach_the_client_is_taken_back_everywhere() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let admin = free_port();
    let gateway = Gateway::start_with(
        &upstream.url(),
        &format!(
            "  admin:\n    listen: \"127.0.0.1:{admin}\"\n  signatures:\n    ttl: 120s\n    backend: redis\n    redis:\n      url: \"{}\"\n      key_prefix: \"signet:last-bytes:\"\n      lookup_timeout: 300ms\n",
            redis.url()
        ),
    );
    let other = replica(&upstream, &redis.url(), "signet:last-bytes:");
    let body = br#"{"stream":true}"#;
    for attempt in 0..3 {
        let id = format!("last-bytes-{attempt}");
        let writes_before = metric(
            &scrape(admin).await,
            "signet_shared_store_writes_total{result=\"ok\"}",
        );
        // The stream's length, asked of the upstream directly (the same id, the same bytes).
        let shape = [("x-mock-id", id.as_str()), ("x-mock-framing", "length")];
        let total = request(
            upstream.addr,
            "POST",
            "/v1/chat/completions",
            &shape,
            body.to_vec(),
        )
        .await
        .body
        .len();
        let keep = total - 20;
        // The upstream sends all but the last 20 bytes, waits for the gate, then sends them.
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-request-id: {id}\r\nx-mock-id: {id}\r\nx-mock-framing: length\r\nx-mock-chunks: {keep},{total}\r\nx-mock-gate: {id}\r\n\r\n",
            body.len()
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        while body_so_far(&raw).map_or(0, |b| b.len()) < keep {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended early");
            raw.extend_from_slice(&buf[..n]);
        }
        assert_eq!(body_so_far(&raw).unwrap().len(), keep);
        // Done sending, then gone with a reset: the last bytes can no longer be delivered.
        client.shutdown().await.unwrap();
        client.set_zero_linger().unwrap();
        drop(client);
        upstream.release(&id).await;

        let line = gateway.access_line(&id);
        assert_eq!(line["signed"], "false", "{line:?}");
        assert_eq!(line["reason"], "client_abort", "{line:?}");
        assert_eq!(
            line["error"], "WriteError",
            "noticed when writing the last bytes: {line:?}"
        );
        assert_eq!(
            line["response_bytes"],
            total.to_string(),
            "the whole body came from the upstream: {line:?}"
        );
        // Either the reset was seen before the last bytes went out (never signed: nothing
        // written to Redis), or only after (signed, then taken back: a put and a delete of
        // the signature, and of the receipt under its two keys). Either way nothing stays,
        // once nothing waits to be written.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = scrape(admin).await;
            let writes = metric(&text, "signet_shared_store_writes_total{result=\"ok\"}");
            let idle = metric(&text, "signet_shared_store_backlog") == 0.0;
            if idle && (writes == writes_before || writes == writes_before + 6.0) {
                break;
            }
            assert!(
                writes <= writes_before + 6.0,
                "more than the puts and deletes of a signature and a receipt: {text}"
            );
            assert!(
                Instant::now() < deadline,
                "the writer never finished: {text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(redis.keys("signet:last-bytes:*").await.is_empty());
        gateway
            .signature(&id)
            .await
            .assert_envelope(404, "signature_not_found");
        // The receipt the response head named is gone too, here and on the other replica.
        let receipt_id = receipt_id_in(&raw);
        for replica in [&gateway, &other] {
            for lookup in [receipt_id.as_str(), id.as_str()] {
                receipt(replica, lookup, &[])
                    .await
                    .assert_envelope(404, "receipt_not_found");
            }
        }
    }
    let text = scrape(admin).await;
    assert_eq!(metric(&text, "signet_shared_store_dropped_total"), 0.0);
}
