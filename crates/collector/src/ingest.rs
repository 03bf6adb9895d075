//! The ingest pipeline: jobs from the transports (MQTT, HTTPS), a fixed set of workers, one
//! database transaction per gathered group of jobs, and the acknowledgement only after
//! commit.
//!
//! ```text
//! MQTT poller --raw message--> worker[hash(gateway)] --decode, verify--> Work
//! HTTPS handler --decode, verify--> Work --> worker[hash(gateway)]
//! worker: gather jobs up to `transaction_events` -> store::commit -> stream, webhooks,
//!         then each job's Reply (PUBACK / HTTP 2xx)
//! ```
//!
//! The workers know no transport: a job carries its raw message with the gateway its
//! transport vouches for, or ready work, and a [`Reply`] that the transport implements.
//!
//! Jobs of one gateway always go to the same worker, so a gateway's batches commit in the
//! order they arrived and workers never wait for each other's gateway locks. Queues are
//! bounded (`worker_queue`); when a worker's queue is full the sender waits: the MQTT poller
//! stops reading (the broker holds the messages), an HTTPS request waits until its
//! deadline and gets 503.
//!
//! A transaction that fails for a transient reason (database down, deadlock) is retried with
//! capped backoff, holding its jobs unacknowledged. One that fails because of its content is
//! split; a single batch the database refuses is quarantined instead, so one poison message
//! never blocks a queue.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::alerts::AlertContext;
use super::db::{DbError, Pool};
use super::decode::{self, Limits, Rejection};
use super::maintenance::Partitions;
use super::registry::{KeyLookup, Registry};
use super::store::{self, CommitReport, Refusal, Transport, Work, WorkReport};
use super::stream::Hub;
use linesentry_common::Backoff;
use linesentry_event::integrity::{Envelope, IntegrityError};
use linesentry_event::Timestamp;

/// What a job is made of.
#[derive(Debug)]
pub enum Input {
    /// Ready to commit (HTTPS did the checks in its handler; own events).
    Work(Work),
    /// A message as received (MQTT), decoded and verified by the worker.
    Message {
        /// Where it came from, for a quarantine record (the MQTT topic).
        origin: String,
        /// The gateway the transport vouches for (the topic's gateway level), if any.
        gateway: Option<String>,
        payload: Bytes,
    },
}

/// Who waits for the outcome of a job. Each transport answers in its own way (MQTT with
/// the PUBACK, in `mqtt`; HTTPS with its response, which waits on the `oneshot` of
/// [`Ingest::commit`]), so the workers need none of them.
pub trait Reply: Send + fmt::Debug {
    /// The job is done with: committed (`Ok`), or given up (`Err`: its deadline passed, or
    /// the database refused the collector's own record). Not called for a job still
    /// queued or uncommitted at shutdown: it is left to the broker or the client to send
    /// again.
    fn finish(self: Box<Self>, outcome: Result<WorkReport, Unavailable>);
}

impl Reply for oneshot::Sender<Result<WorkReport, Unavailable>> {
    fn finish(self: Box<Self>, outcome: Result<WorkReport, Unavailable>) {
        let _ = self.send(outcome);
    }
}

/// One unit of work for a worker.
#[derive(Debug)]
pub struct Job {
    pub input: Input,
    /// How it arrived: named in the quarantine record of a batch the database refuses.
    pub transport: Transport,
    /// The bytes as received, kept to quarantine a batch the database refuses.
    pub raw: Option<Bytes>,
    /// None: nobody waits (the collector's own events).
    pub reply: Option<Box<dyn Reply>>,
    /// HTTPS: when the client stops waiting.
    pub deadline: Option<Instant>,
}

/// The collector could not commit in time (database down or overloaded).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Ingest counters, for the status API and the benchmark.
#[derive(Debug, Default)]
pub struct Counters {
    pub transactions: AtomicU64,
    pub batches: AtomicU64,
    pub events_inserted: AtomicU64,
    pub duplicates: AtomicU64,
    pub retries: AtomicU64,
    /// Refused batches by kind and transport (`https:invalid_events`).
    refused: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn refused(&self, transport: Transport, kind: &str) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(format!("{}:{kind}", transport.as_str()))
                .or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> Value {
        let refused: BTreeMap<String, u64> =
            self.refused.lock().map(|m| m.clone()).unwrap_or_default();
        json!({
            "transactions": self.transactions.load(Ordering::Relaxed),
            "batches": self.batches.load(Ordering::Relaxed),
            "events_inserted": self.events_inserted.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "refused": refused,
        })
    }
}

/// What workers share.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub pool: Pool,
    pub registry: Registry,
    pub hub: Hub,
    pub alerts: Arc<AlertContext>,
    pub collector_id: String,
    pub limits: Limits,
    pub transaction_events: usize,
    pub counters: Arc<Counters>,
    /// Woken when a transaction raised alerts (webhook outbox has work).
    pub webhooks: Arc<Notify>,
    pub partitions: Partitions,
}

/// The sending side of the worker pool.
#[derive(Debug, Clone)]
pub struct Ingest {
    senders: Arc<Vec<mpsc::Sender<Job>>>,
    collector_id: String,
    pub counters: Arc<Counters>,
}

fn route(key: &str, n: usize) -> usize {
    // FNV-1a: stable across runs, cheap.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

impl Ingest {
    /// Starts `workers` workers; they run until every `Ingest` clone is dropped and their
    /// queues are empty.
    pub fn start(
        ctx: &WorkerContext,
        workers: usize,
        queue: usize,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers {
            let (tx, rx) = mpsc::channel(queue);
            senders.push(tx);
            let ctx = ctx.clone();
            handles.push(tokio::spawn(async move { worker(n, rx, ctx).await }));
        }
        (
            Self {
                senders: Arc::new(senders),
                collector_id: ctx.collector_id.clone(),
                counters: Arc::clone(&ctx.counters),
            },
            handles,
        )
    }

    /// Queues a job on the worker of its gateway; waits while that queue is full.
    pub async fn submit(&self, job: Job, gateway_hint: &str) -> Result<(), Unavailable> {
        let n = route(gateway_hint, self.senders.len());
        self.senders[n]
            .send(job)
            .await
            .map_err(|_| Unavailable("the collector is shutting down".into()))
    }

    /// The collector's id (the gateway_id of its own events).
    pub fn collector_id(&self) -> &str {
        &self.collector_id
    }

    /// Queues the collector's own events (api.access, status changes).
    pub async fn submit_local(&self, events: Vec<linesentry_event::SecurityEvent>) {
        let job = Job {
            input: Input::Work(Work::Local(events)),
            transport: Transport::Local,
            raw: None,
            reply: None,
            deadline: None,
        };
        let key = self.collector_id.clone();
        let _ = self.submit(job, &key).await;
    }

    /// Queues work that arrived by `transport` and waits for its commit (HTTPS).
    pub async fn commit(
        &self,
        transport: Transport,
        work: Work,
        raw: Option<Bytes>,
        deadline: Instant,
    ) -> Result<WorkReport, Unavailable> {
        let key = work.lock_key(&self.collector_id).to_owned();
        let (tx, rx) = oneshot::channel();
        let job = Job {
            input: Input::Work(work),
            transport,
            raw,
            reply: Some(Box::new(tx)),
            deadline: Some(deadline),
        };
        tokio::time::timeout_at(deadline, self.submit(job, &key))
            .await
            .map_err(|_| Unavailable("ingest queue full; try again".into()))??;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Unavailable("the collector is shutting down".into())),
            Err(_) => Err(Unavailable(
                "the database did not commit in time; the batch may be stored, send it again"
                    .into(),
            )),
        }
    }
}

/// Why a batch is not stored as genuine.
#[derive(Debug, Clone)]
pub struct NotGenuine {
    pub kind: &'static str,
    pub reason: String,
    /// The gateway the batch claims (or its topic names).
    pub gateway_id: Option<String>,
    pub detail: Map<String, Value>,
}

impl NotGenuine {
    fn rejected(r: &Rejection, gateway_id: Option<String>) -> Self {
        Self {
            kind: r.kind(),
            reason: r.to_string(),
            gateway_id,
            detail: rejection_detail(r),
        }
    }
}

fn batch_detail(env: &Envelope) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("claimed_gateway_id".into(), env.gateway_id.clone().into());
    d.insert("key_id".into(), env.key_id.clone().into());
    d.insert("events".into(), env.events.len().into());
    d.insert(
        "event_ids".into(),
        env.events
            .iter()
            .take(100)
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>()
            .into(),
    );
    d.insert(
        "seqs".into(),
        env.events
            .iter()
            .take(100)
            .map(|e| e.seq)
            .collect::<Vec<_>>()
            .into(),
    );
    d
}

/// Checks the batch against its gateway's registered key. `expected_gateway` is the gateway
/// the transport vouches for (the MQTT topic, the HTTPS token or certificate).
pub async fn verify(
    env: Envelope,
    registry: &Registry,
    expected_gateway: Option<&str>,
) -> Result<Result<Work, NotGenuine>, DbError> {
    let fail = |kind: &'static str, reason: String, env: &Envelope| NotGenuine {
        kind,
        reason,
        gateway_id: Some(env.gateway_id.clone()),
        detail: batch_detail(env),
    };
    if let Some(expected) = expected_gateway {
        if expected != env.gateway_id {
            let reason = format!(
                "batch of gateway `{}` arrived on behalf of gateway `{expected}`",
                env.gateway_id
            );
            return Ok(Err(fail("gateway_mismatch", reason, &env)));
        }
    }
    let key = match registry.lookup(&env.gateway_id, &env.key_id).await? {
        KeyLookup::Key(k) => k,
        KeyLookup::UnknownGateway => {
            let reason = format!("gateway `{}` is not registered", env.gateway_id);
            return Ok(Err(fail("unknown_gateway", reason, &env)));
        }
        KeyLookup::Disabled => {
            let reason = format!("gateway `{}` is disabled", env.gateway_id);
            return Ok(Err(fail("gateway_disabled", reason, &env)));
        }
        KeyLookup::UnknownKey => {
            let reason = format!(
                "key `{}` is not registered for gateway `{}`",
                env.key_id, env.gateway_id
            );
            return Ok(Err(fail("unknown_key", reason, &env)));
        }
        KeyLookup::RevokedKey => {
            let reason = format!(
                "key `{}` of gateway `{}` is revoked",
                env.key_id, env.gateway_id
            );
            return Ok(Err(fail("revoked_key", reason, &env)));
        }
    };
    match env.verify(&key) {
        Ok(hashes) => Ok(Ok(Work::Genuine {
            gateway_id: env.gateway_id,
            events: env.events,
            hashes,
        })),
        Err(e) => {
            let kind = match e {
                IntegrityError::BadSignature => "bad_signature",
                IntegrityError::SignatureFormat => "signature_format",
                IntegrityError::ForeignEvent { .. } => "foreign_event",
                IntegrityError::UnknownKey { .. } => "unknown_key",
                _ => "integrity",
            };
            Ok(Err(fail(kind, e.to_string(), &env)))
        }
    }
}

/// Turns a refused MQTT message or HTTPS request into quarantine work. `integrity`: not
/// genuine (a `security.violation`) rather than malformed (an `ingest.rejected`).
pub fn refusal(
    transport: Transport,
    origin: String,
    body: &[u8],
    integrity: bool,
    why: NotGenuine,
) -> Work {
    Work::Refused(Refusal {
        transport,
        origin,
        gateway_id: why.gateway_id,
        kind: why.kind,
        reason: why.reason,
        integrity,
        body: body.to_vec(),
        detail: why.detail,
    })
}

fn rejection_detail(r: &Rejection) -> Map<String, Value> {
    match r.to_json() {
        Value::Object(mut m) => {
            m.remove("error");
            m.remove("reason");
            m
        }
        _ => Map::new(),
    }
}

/// Decodes and verifies one message into work (genuine or quarantined). `vouched`: the
/// gateway its transport vouches for.
async fn prepare_message(
    transport: Transport,
    origin: String,
    vouched: Option<String>,
    payload: &Bytes,
    ctx: &WorkerContext,
) -> Result<Work, DbError> {
    let now = Timestamp::now().as_micros();
    let bytes = match decode::decompress(
        payload,
        decode::looks_gzipped(payload),
        ctx.limits.max_bytes,
    ) {
        Ok(b) => b,
        Err(r) => {
            ctx.counters.refused(transport, r.kind());
            let why = NotGenuine::rejected(&r, vouched);
            return Ok(refusal(transport, origin, payload, false, why));
        }
    };
    let env = match decode::decode(&bytes, &ctx.limits, now) {
        Ok(env) => env,
        Err(r) => {
            ctx.counters.refused(transport, r.kind());
            let why = NotGenuine::rejected(&r, vouched);
            return Ok(refusal(transport, origin, payload, false, why));
        }
    };
    Ok(
        match verify(env, &ctx.registry, vouched.as_deref()).await? {
            Ok(work) => work,
            Err(ng) => {
                ctx.counters.refused(transport, ng.kind);
                refusal(transport, origin, payload, true, ng)
            }
        },
    )
}

/// A job with its work ready.
struct Ready {
    work: Work,
    transport: Transport,
    raw: Option<Bytes>,
    reply: Option<Box<dyn Reply>>,
    deadline: Option<Instant>,
}

async fn worker(n: usize, mut rx: mpsc::Receiver<Job>, ctx: WorkerContext) {
    while let Some(first) = rx.recv().await {
        let taken = Instant::now();
        let mut jobs = vec![first];
        let mut events = 0usize;
        while events < ctx.transaction_events {
            match rx.try_recv() {
                Ok(job) => {
                    events += match &job.input {
                        Input::Work(w) => w.event_count(),
                        Input::Message { payload, .. } => payload.len() / 400 + 1,
                    };
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            let work = match job.input {
                Input::Work(w) => w,
                Input::Message {
                    origin,
                    gateway,
                    payload,
                } => {
                    let mut backoff =
                        Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
                    loop {
                        let (origin, gateway) = (origin.clone(), gateway.clone());
                        let prepared =
                            prepare_message(job.transport, origin, gateway, &payload, &ctx);
                        match prepared.await {
                            Ok(w) => break w,
                            Err(e) => {
                                tracing::warn!(worker = n, error = %e, "gateway registry unavailable; retrying");
                                tokio::time::sleep(backoff.next_delay()).await;
                            }
                        }
                    }
                }
            };
            ready.push(Ready {
                work,
                transport: job.transport,
                raw: job.raw,
                reply: job.reply,
                deadline: job.deadline,
            });
        }
        let prepared = Instant::now();
        let count = ready.len();
        commit_with_retry(n, ready, &ctx).await;
        let done = Instant::now();
        if done - taken >= SLOW_TRANSACTION {
            // Where a slow transaction spent its time: decoding and verifying (the registry)
            // or the database (commit, including its WAL flush).
            tracing::debug!(
                worker = n,
                jobs = count,
                prepare_ms = (prepared - taken).as_millis() as u64,
                commit_ms = (done - prepared).as_millis() as u64,
                "slow transaction"
            );
        }
    }
}

/// A transaction taking longer than this is logged (debug) with where its time went.
const SLOW_TRANSACTION: Duration = Duration::from_millis(50);

fn deliver(report: CommitReport, jobs: Vec<Ready>, ctx: &WorkerContext) {
    ctx.counters.transactions.fetch_add(1, Ordering::Relaxed);
    ctx.hub.publish(&report.new_events);
    if report.alerts > 0 {
        ctx.webhooks.notify_one();
    }
    for (job, r) in jobs.into_iter().zip(report.works) {
        if matches!(job.work, Work::Genuine { .. }) {
            ctx.counters.batches.fetch_add(1, Ordering::Relaxed);
            ctx.counters
                .events_inserted
                .fetch_add(r.inserted as u64, Ordering::Relaxed);
            ctx.counters
                .duplicates
                .fetch_add(r.duplicates as u64, Ordering::Relaxed);
        }
        if let Some(reply) = job.reply {
            reply.finish(Ok(r));
        }
    }
}

/// Commits `jobs`, retrying transient failures; splits on content failures. Replies to
/// every job exactly once (MQTT jobs that could not be committed are left unacknowledged:
/// the broker delivers them again).
async fn commit_with_retry(n: usize, mut jobs: Vec<Ready>, ctx: &WorkerContext) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let works: Vec<&Work> = jobs.iter().map(|j| &j.work).collect();
        let result = async {
            let mut conn = ctx.pool.get().await?;
            ctx.partitions.ensure_for(&mut conn, &works).await?;
            let streaming = ctx.hub.stats().clients > 0;
            store::commit(&mut conn, &works, &ctx.collector_id, &ctx.alerts, streaming).await
        }
        .await;
        let error = match result {
            Ok(report) => return deliver(report, jobs, ctx),
            Err(e) => e,
        };
        if error.is_transient() {
            ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(worker = n, jobs = jobs.len(), error = %error, "commit failed; retrying");
            let now = Instant::now();
            jobs.retain_mut(|j| {
                let expired = j.deadline.is_some_and(|d| d <= now);
                if expired {
                    if let Some(reply) = j.reply.take() {
                        reply.finish(Err(Unavailable(format!("database unavailable: {error}"))));
                    }
                }
                !expired
            });
            if jobs.is_empty() {
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        if jobs.len() > 1 {
            tracing::warn!(worker = n, jobs = jobs.len(), error = %error, "commit refused; committing the batches one by one");
            for job in jobs {
                Box::pin(commit_with_retry(n, vec![job], ctx)).await;
            }
            return;
        }
        let Some(mut job) = jobs.pop() else { return };
        if let Work::Genuine { gateway_id, .. } = &job.work {
            // The database refuses this batch's content: keep it in quarantine instead,
            // so it neither blocks the queue nor disappears.
            tracing::warn!(worker = n, gateway = %gateway_id, error = %error, "database refused a batch; quarantining it");
            let body = job.raw.clone().map(|b| b.to_vec()).unwrap_or_default();
            let transport = job.transport;
            job.work = Work::Refused(Refusal {
                transport,
                origin: "database".into(),
                gateway_id: Some(gateway_id.clone()),
                kind: "database_refused",
                reason: error.to_string(),
                integrity: false,
                body,
                detail: Map::new(),
            });
            ctx.counters.refused(transport, "database_refused");
            jobs = vec![job];
        } else {
            tracing::error!(worker = n, error = %error, "database refused the collector's own record; it is lost");
            if let Some(reply) = job.reply {
                reply.finish(Err(Unavailable(format!(
                    "database refused the batch: {error}"
                ))));
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_spreads() {
        assert_eq!(route("gw-1", 4), route("gw-1", 4));
        let used: std::collections::HashSet<usize> =
            (0..64).map(|i| route(&format!("gw-{i}"), 4)).collect();
        assert_eq!(used.len(), 4);
    }
}
