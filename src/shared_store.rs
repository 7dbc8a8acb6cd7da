//! A signature and receipt store shared by a fleet of signet replicas, on Redis.
//!
//! Every replica keeps its own signatures in memory (the authoritative copy for its own
//! lookups) and mirrors them to Redis so any replica can answer `GET /v1/signature/{id}` for a
//! completion served by any other. Records are the receipts as served (text, signature and
//! the signing address, so a client can tell which replica's key signed), written with the
//! store's TTL (`SET key value EX ttl NX`) under a configurable key prefix, so several models
//! or deployments can share one Redis. `NX`: a record already there (another replica's, for
//! the same id) is never replaced; a withdrawal deletes the key only while it still holds
//! exactly the record this replica published (compare-and-delete in one Lua call).
//!
//! ACI receipts (`GET /v1/aci/receipts/{id}`) are mirrored the same way, under two keys of
//! their own namespaces (`aci-receipt/<receipt id>`, `aci-chat/<response id>`), each written
//! `NX` and withdrawn by compare-and-delete; their records are signed by the writer (see
//! [`RecordValue::Deferred`]).
//!
//! Writes never block the response path: sealing hands the record to a bounded queue that a
//! background writer drains, pipelining up to 256 commands per round trip. If Redis is down or
//! slow, records wait in a bounded backlog (their remaining TTL shrinks meanwhile) and are
//! written when Redis returns; failures are logged and counted. Lookups ask local memory
//! first, then Redis with a short timeout.

use crate::metrics::METRICS;
use log::{info, warn};
use redis::aio::ConnectionManager;
use signet_core::receipt::SignatureReceipt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, mpsc};

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://…` for TLS.
    pub url: String,
    /// Password (from `password_file`), if any.
    pub password: Option<String>,
    /// Prefix of every key signet writes.
    pub key_prefix: String,
    /// Longest wait for a lookup.
    pub lookup_timeout: Duration,
    /// Most records waiting to be written while Redis is unavailable.
    pub backlog: usize,
}

/// Why Redis could not answer a lookup.
#[derive(Debug, thiserror::Error)]
#[error("shared signature store unavailable: {0}")]
pub struct SharedStoreError(String);

/// A record's value as queued: its text, or made by the writer when it takes the record
/// (an ACI receipt is signed there, off the response path; signing is deterministic, so a
/// withdrawal renders exactly the bytes its put wrote).
pub enum RecordValue {
    /// Ready to write.
    Text(String),
    /// Made when the writer takes it; `None` drops the write.
    Deferred(Box<dyn FnOnce() -> Option<String> + Send>),
}

impl RecordValue {
    fn render(self) -> Option<String> {
        match self {
            Self::Text(text) => Some(text),
            Self::Deferred(make) => make(),
        }
    }
}

/// A write as queued: one value under one or more keys.
enum Queued {
    Put {
        keys: Vec<String>,
        value: RecordValue,
        expires_at: Instant,
    },
    Delete {
        keys: Vec<String>,
        value: RecordValue,
    },
}

impl Queued {
    /// The write with its value rendered, one per key; nothing if there is no value.
    fn into_writes(self) -> Vec<Write> {
        match self {
            Self::Put {
                keys,
                value,
                expires_at,
            } => value.render().map_or_else(Vec::new, |value| {
                keys.into_iter()
                    .map(|key| Write::Put {
                        key,
                        value: value.clone(),
                        expires_at,
                    })
                    .collect()
            }),
            Self::Delete { keys, value } => value.render().map_or_else(Vec::new, |value| {
                keys.into_iter()
                    .map(|key| Write::Delete {
                        key,
                        value: value.clone(),
                    })
                    .collect()
            }),
        }
    }
}

enum Write {
    Put {
        key: String,
        value: String,
        expires_at: Instant,
    },
    Delete {
        key: String,
        value: String,
    },
}

/// Deletes KEYS[1] only while it holds ARGV[1]: a replica takes back its own record, never
/// another's.
const DELETE_IF_OURS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The Redis mirror of the signature store.
pub struct SharedStore {
    settings: RedisSettings,
    client: redis::Client,
    connection: RwLock<Option<ConnectionManager>>,
    queue: mpsc::Sender<Queued>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Queued>>>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("key_prefix", &self.settings.key_prefix)
            .finish_non_exhaustive()
    }
}

/// Commands pipelined per round trip.
const BATCH: usize = 256;

impl SharedStore {
    /// Prepares the mirror; nothing is contacted until [`SharedStore::run_writer`] runs.
    pub fn new(settings: RedisSettings) -> Result<Self, SharedStoreError> {
        let mut info: redis::ConnectionInfo = settings
            .url
            .as_str()
            .parse()
            .map_err(|e: redis::RedisError| SharedStoreError(e.to_string()))?;
        if let Some(password) = &settings.password {
            info.redis.password = Some(password.clone());
        }
        let client = redis::Client::open(info).map_err(|e| SharedStoreError(e.to_string()))?;
        let (queue, receiver) = mpsc::channel(settings.backlog.max(1));
        Ok(Self {
            settings,
            client,
            connection: RwLock::new(None),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.settings.key_prefix)
    }

    /// Queues a record for Redis. Never waits: if the queue is full the record stays local
    /// only, and that is counted.
    pub fn publish(&self, id: &str, receipt: &SignatureReceipt, ttl: Duration) {
        let Ok(value) = serde_json::to_string(receipt) else {
            return;
        };
        self.publish_under(vec![self.key(id)], RecordValue::Text(value), ttl);
    }

    /// Queues the removal of this replica's record for `id` (its response did not reach the
    /// client); a record someone else wrote under the same id stays.
    pub fn withdraw(&self, id: &str, receipt: &SignatureReceipt) {
        let Ok(value) = serde_json::to_string(receipt) else {
            return;
        };
        self.withdraw_under(vec![self.key(id)], RecordValue::Text(value));
    }

    /// The keys of an ACI receipt: by receipt id, and by the response's id when it has one.
    /// Their own namespaces (`aci-receipt/`, `aci-chat/`): an id never holds `/`, so they
    /// meet neither each other nor the signatures' keys.
    pub fn receipt_keys(&self, receipt_id: &str, chat_id: Option<&str>) -> Vec<String> {
        let mut keys = vec![format!(
            "{}aci-receipt/{receipt_id}",
            self.settings.key_prefix
        )];
        if let Some(chat_id) = chat_id {
            keys.push(format!("{}aci-chat/{chat_id}", self.settings.key_prefix));
        }
        keys
    }

    /// Queues `value` under every key of `keys`, each only where nothing is yet (`NX`), with
    /// the store's TTL. Never waits.
    pub fn publish_under(&self, keys: Vec<String>, value: RecordValue, ttl: Duration) {
        let write = Queued::Put {
            keys,
            value,
            expires_at: Instant::now() + ttl,
        };
        if self.queue.try_send(write).is_err() {
            METRICS.shared_store_dropped.inc();
        }
    }

    /// Queues the removal of `value` from every key of `keys` that still holds exactly it.
    pub fn withdraw_under(&self, keys: Vec<String>, value: RecordValue) {
        if self.queue.try_send(Queued::Delete { keys, value }).is_err() {
            METRICS.shared_store_dropped.inc();
        }
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        self.connection.read().await.clone()
    }

    /// Looks a receipt up in Redis: `Ok(None)` when Redis has no such record.
    pub async fn lookup(&self, id: &str) -> Result<Option<SignatureReceipt>, SharedStoreError> {
        let found = self.lookup_first(&[self.key(id)]).await?;
        Ok(found.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// The value of the first of `keys` that holds one (one round trip), `Ok(None)` when
    /// none does.
    pub async fn lookup_first(&self, keys: &[String]) -> Result<Option<String>, SharedStoreError> {
        let mut connection = self
            .connection()
            .await
            .ok_or_else(|| SharedStoreError("not connected".to_owned()))?;
        let answer = tokio::time::timeout(
            self.settings.lookup_timeout,
            redis::cmd("MGET")
                .arg(keys)
                .query_async::<Vec<Option<String>>>(&mut connection),
        )
        .await
        .map_err(|_| {
            SharedStoreError(format!(
                "no answer within {:?}",
                self.settings.lookup_timeout
            ))
        })?
        .map_err(|e| SharedStoreError(e.to_string()))?;
        Ok(answer.into_iter().flatten().next())
    }

    /// Connects (and keeps reconnecting), then drains the queue into Redis until `stop`.
    pub async fn run_writer(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(mut receiver) = self.receiver.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let mut backlog: VecDeque<Write> = VecDeque::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            self.connect_if_needed().await;
            if !self.gather(&mut receiver, &mut backlog, &mut stop).await {
                return;
            }
            let Some(mut connection) = self.connection().await else {
                if !pause(&mut stop, &mut backoff).await {
                    return;
                }
                continue;
            };
            let batch: Vec<Write> = backlog.drain(..backlog.len().min(BATCH)).collect();
            let (pipe, commands) = pipeline(&batch, Instant::now());
            if commands == 0 {
                METRICS.shared_store_backlog.set(backlog.len() as i64);
                continue;
            }
            let result = tokio::time::timeout(
                Duration::from_secs(5),
                pipe.query_async::<()>(&mut connection),
            )
            .await;
            let why = match result {
                Ok(Ok(())) => {
                    written(commands, &backlog);
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            self.keep_for_retry(batch, &mut backlog, commands, &why);
            if !pause(&mut stop, &mut backoff).await {
                return;
            }
        }
    }

    /// Opens the connection to Redis when there is none; a failure is logged and counted,
    /// and the next round tries again.
    async fn connect_if_needed(&self) {
        if self.connection().await.is_some() {
            return;
        }
        match ConnectionManager::new(self.client.clone()).await {
            Ok(manager) => {
                info!("shared signature store: connected to Redis");
                *self.connection.write().await = Some(manager);
            }
            Err(e) => {
                warn!("shared signature store: cannot connect to Redis: {e}");
                METRICS
                    .shared_store_writes
                    .with_label_values(&["error"])
                    .inc();
            }
        }
    }

    /// Gathers work: the backlog first, then whatever is queued (waiting for some when the
    /// backlog is empty). `false` when the writer must stop.
    async fn gather(
        &self,
        receiver: &mut mpsc::Receiver<Queued>,
        backlog: &mut VecDeque<Write>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        if backlog.is_empty() {
            tokio::select! {
                _ = stop.changed() => return false,
                next = receiver.recv() => match next {
                    Some(queued) => backlog.extend(queued.into_writes()),
                    None => return false,
                },
            }
        }
        while backlog.len() < self.settings.backlog {
            match receiver.try_recv() {
                Ok(queued) => backlog.extend(queued.into_writes()),
                Err(_) => break,
            }
        }
        METRICS.shared_store_backlog.set(backlog.len() as i64);
        true
    }

    /// A failed batch goes back in front of the backlog, in order; the oldest records beyond
    /// the bound are dropped (and counted).
    fn keep_for_retry(
        &self,
        batch: Vec<Write>,
        backlog: &mut VecDeque<Write>,
        commands: usize,
        why: &str,
    ) {
        warn!(
            "shared signature store: writing {commands} record(s) to Redis failed ({why}); kept locally, will retry"
        );
        METRICS
            .shared_store_writes
            .with_label_values(&["error"])
            .inc_by(commands as u64);
        for write in batch.into_iter().rev() {
            backlog.push_front(write);
        }
        while backlog.len() > self.settings.backlog {
            backlog.pop_front();
            METRICS.shared_store_dropped.inc();
        }
        METRICS.shared_store_backlog.set(backlog.len() as i64);
    }
}

/// One round trip's commands for `batch`, and how many there are: a put whose TTL has run
/// out by `now` is not written.
fn pipeline(batch: &[Write], now: Instant) -> (redis::Pipeline, usize) {
    let mut pipe = redis::pipe();
    let mut commands = 0;
    for write in batch {
        match write {
            Write::Put {
                key,
                value,
                expires_at,
            } => {
                let left = expires_at.saturating_duration_since(now).as_secs();
                if left > 0 {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(left)
                        .arg("NX")
                        .ignore();
                    commands += 1;
                }
            }
            Write::Delete { key, value } => {
                pipe.cmd("EVAL")
                    .arg(DELETE_IF_OURS)
                    .arg(1)
                    .arg(key)
                    .arg(value)
                    .ignore();
                commands += 1;
            }
        }
    }
    (pipe, commands)
}

/// Counts a batch written, and what still waits (not what waited before it went out).
fn written(commands: usize, backlog: &VecDeque<Write>) {
    METRICS
        .shared_store_writes
        .with_label_values(&["ok"])
        .inc_by(commands as u64);
    METRICS.shared_store_backlog.set(backlog.len() as i64);
}

/// Waits `backoff` (doubling it, up to 5 s) unless told to stop; `false` when stopped.
async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>, backoff: &mut Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => return false,
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    true
}

/// The background service that runs the writer.
pub struct SharedStoreWriter(pub Arc<SharedStore>);

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for SharedStoreWriter {
    async fn start(&self, shutdown: pingora_core::server::ShutdownWatch) {
        self.0.run_writer(shutdown).await;
    }
}
