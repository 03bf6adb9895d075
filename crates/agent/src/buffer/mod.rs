//! The durable store-and-forward queue: the only code that touches redb.
//!
//! Guarantees:
//! - `append` answers only after the events are in a committed, fsynced transaction; each
//!   event is numbered there with the gateway's next `seq` (strictly increasing, never reused,
//!   see [`seqfloor`]).
//! - `peek` reads in seq order from a snapshot; `ack` deletes only what it names.
//! - The store is bounded by a byte quota. When full, debug/info events go first, oldest
//!   first; warn-or-higher events go only when no telemetry is left. Every eviction is
//!   counted and reported by an `agent.buffer_dropped` event written by the buffer itself;
//!   crossing the high watermark writes `agent.buffer_high`.
//! - A store file that cannot be opened (corrupt, wrong format, redb panics on it) is moved
//!   aside with a timestamp, a fresh one is created and an `agent.buffer_reset` event says so.
//!   A locked file (another agent running) or an unwritable directory is an error instead.
//! - Pages freed by acks are reused by redb; on open the file is compacted when it is much
//!   larger than what it holds, so steady append/ack never grows it without bound.
//!
//! Concurrency: one writer thread (see [`writer`]) owns write transactions and group-commits;
//! readers use MVCC snapshots from any thread. Appends in flight are bounded by a semaphore
//! (`inflight_events`): a caller waits when it is exhausted (back-pressure, never a drop).

pub mod bench;
mod inspect;
mod seqfloor;
mod store;
mod trim;
mod writer;

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable};
use tokio::sync::{oneshot, Notify, Semaphore};

use linesentry_event::{EventType, SecurityEvent, Severity, Timestamp};

pub use inspect::{InspectError, Inspector};
pub use store::RecordError;

use seqfloor::{Found, SeqFloor};
pub use store::Lane;
use store::{DeadRecord, Encoded, Meta, ALERTS, DEAD, LAYOUT_VERSION, META, STATE, TELEMETRY};
use writer::{Command, Held, Writer};

/// redb's page cache by default. The queue reads mostly what it just wrote, in order, so a
/// small cache serves it; redb's default (up to 1 GiB) would let a backlog grow the agent's
/// memory. 8 MiB filled up in `bench poll` (1,250 events/s appended, nothing forwarded) and
/// was a quarter of the agent's memory; 2 MiB cost no CPU there (docs/BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: usize = 2 << 20;
// The other defaults of [`QueueOptions`], which the `[buffer]` keys default to as well.
pub const DEFAULT_QUOTA_BYTES: u64 = 256 << 20;
pub const DEFAULT_COMMIT_MAX_EVENTS: usize = 4096;
pub const DEFAULT_COMMIT_LINGER: Duration = Duration::ZERO;
pub const DEFAULT_HIGH_WATERMARK_PERCENT: u8 = 80;
pub const DEFAULT_DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 << 10;
pub const DEFAULT_INFLIGHT_EVENTS: usize = 65_536;
/// `buffer.routine_commit_ms` when not given. [`QueueOptions::new`] keeps zero instead (every
/// routine append commits at once), for callers without a configuration: tests and tools.
pub const DEFAULT_ROUTINE_COMMIT: Duration = Duration::from_millis(100);

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "queue.redb";

/// Bytes one event takes as a stored record (before the per-record overhead).
pub fn record_len(event: &SecurityEvent) -> Result<usize, QueueError> {
    Encoded::new(event)
        .map(|e| e.record.len())
        .map_err(|e| QueueError::encode(&e))
}

/// How the queue is bounded and how it commits: the validated `[buffer]` section, with `dir`
/// and `gateway_id` from `[agent]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    pub dir: PathBuf,
    pub gateway_id: String,
    pub quota_bytes: u64,
    pub commit_max_events: usize,
    pub commit_linger: Duration,
    /// How long a [`Commit::Routine`] append may wait to share a commit (0: never).
    pub routine_commit: Duration,
    pub high_watermark_percent: u8,
    pub drop_report_interval: Duration,
    pub max_event_bytes: usize,
    /// Events accepted by `append` but not yet committed, at most.
    pub inflight_events: usize,
    /// redb's page cache, at most.
    pub cache_bytes: usize,
}

impl QueueOptions {
    /// Defaults for everything but where and whose.
    pub fn new(dir: impl Into<PathBuf>, gateway_id: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            gateway_id: gateway_id.into(),
            quota_bytes: DEFAULT_QUOTA_BYTES,
            commit_max_events: DEFAULT_COMMIT_MAX_EVENTS,
            commit_linger: DEFAULT_COMMIT_LINGER,
            routine_commit: Duration::ZERO,
            high_watermark_percent: DEFAULT_HIGH_WATERMARK_PERCENT,
            drop_report_interval: DEFAULT_DROP_REPORT_INTERVAL,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            inflight_events: DEFAULT_INFLIGHT_EVENTS,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// How soon an append must be durable (see [`writer`] for the shared commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// In a commit started at once, which takes any waiting routine appends with it.
    Now,
    /// May wait up to `routine_commit` to share one commit with other routine appends.
    Routine,
}

impl Commit {
    /// `Now` when any of `events` is of severity warn or above, else `Routine`.
    pub fn for_events(events: &[SecurityEvent]) -> Self {
        if events.iter().any(|e| e.severity >= Severity::Warn) {
            Commit::Now
        } else {
            Commit::Routine
        }
    }
}

/// The answer to a submitted append: its seqs once committed. A future; until it resolves
/// the events are not durable.
#[derive(Debug)]
#[must_use = "the events are durable only once the confirmation resolves to Ok"]
pub struct Confirmation(oneshot::Receiver<Result<Vec<u64>, QueueError>>);

impl Future for Confirmation {
    type Output = Result<Vec<u64>, QueueError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(QueueError::Closed)))
    }
}

/// What to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Every event with seq <= this.
    UpTo(u64),
    /// Exactly these events (missing ones are ignored).
    Seqs(Vec<u64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckReport {
    pub removed: u64,
}

/// Errors of queue operations. Cloneable: one failed commit answers many callers.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    #[error("store error: {message}")]
    Storage { message: String },
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    #[error("event of type `{event_type}` is {size} bytes encoded; the limit is {limit}")]
    TooLarge {
        event_type: String,
        size: usize,
        limit: usize,
    },
    #[error("event could not be encoded: {0}")]
    Encode(String),
    #[error("stored record unreadable: {0}")]
    Record(Arc<RecordError>),
    #[error("the queue is closed")]
    Closed,
}

impl QueueError {
    fn storage(e: impl Into<redb::Error>) -> Self {
        QueueError::Storage {
            message: e.into().to_string(),
        }
    }

    fn encode(e: &postcard::Error) -> Self {
        QueueError::Encode(e.to_string())
    }
}

/// An event a receiver rejected, kept in the dead-letter table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub seq: u64,
    pub reason: String,
    /// When it was moved there (RFC 3339).
    pub dead_lettered_at: String,
    pub event: SecurityEvent,
}

pub(crate) enum DeadReadError {
    Storage(redb::Error),
    Record(RecordError),
}

/// Reads up to `max` dead letters from a snapshot.
pub(crate) fn read_dead(
    txn: &redb::ReadTransaction,
    max: usize,
) -> Result<Vec<DeadLetter>, DeadReadError> {
    let table = match txn.open_table(DEAD) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(DeadReadError::Storage(e.into())),
    };
    let mut out = Vec::new();
    for item in table
        .iter()
        .map_err(|e| DeadReadError::Storage(e.into()))?
        .take(max)
    {
        let (seq, value) = item.map_err(|e| DeadReadError::Storage(e.into()))?;
        let seq = seq.value();
        let value = value.value();
        let dead = DeadRecord::decode(seq, value).map_err(DeadReadError::Record)?;
        let event = store::decode(seq, dead.record).map_err(DeadReadError::Record)?;
        out.push(DeadLetter {
            seq,
            reason: dead.reason.to_owned(),
            dead_lettered_at: Timestamp::from_micros(dead.at_micros).to_string(),
            event,
        });
    }
    Ok(out)
}

/// Why the queue could not be opened at all (startup cannot continue).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("data directory {path} cannot be created or written: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path} is in use by another process (a running agent, or a `linesentry buffer` command)")]
    Locked { path: PathBuf },
    #[error("store {path}: {message}")]
    Storage { path: PathBuf, message: String },
    #[error("could not move the unreadable store {path} aside: {source}")]
    Quarantine {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid queue options: {0}")]
    Options(String),
}

/// What `open` found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Set when the previous store was unreadable and was moved aside.
    pub reset: Option<ResetInfo>,
    pub compacted: bool,
    pub depth: u64,
    pub next_seq: u64,
}

#[derive(Debug, Clone)]
pub struct ResetInfo {
    pub moved_to: PathBuf,
    pub reason: String,
}

/// Live counters, updated after every commit.
#[derive(Debug, Clone, Default)]
pub struct StatsCell {
    /// Requeues of dead letters so far: a reader that keeps a cursor rescans when it changes.
    pub requeues: u64,
    pub dead_letters: u64,
    pub depth: u64,
    pub bytes: u64,
    pub next_seq: u64,
    pub dropped_total: [u64; 5],
    pub commits: u64,
    /// Commits that skipped their fsync (ack-only, made durable by the next synced one).
    pub unsynced_commits: u64,
    pub failed_commits: u64,
}

/// A snapshot of the queue's state for metrics and `buffer stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStats {
    pub depth: u64,
    pub bytes: u64,
    pub quota_bytes: u64,
    pub next_seq: u64,
    pub oldest_seq: Option<u64>,
    pub oldest_timestamp: Option<String>,
    pub dropped_total: u64,
    pub commits: u64,
    /// Commits that skipped their fsync (ack-only, made durable by the next synced one).
    pub unsynced_commits: u64,
    pub failed_commits: u64,
    pub file_bytes: u64,
    pub dead_letters: u64,
    pub requeues: u64,
}

struct Inner {
    /// `None` once closed, so the file is released while handles still exist.
    db: Mutex<Option<Arc<Database>>>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    /// Routine appends waiting for their shared commit (see [`writer::Held`]); locked
    /// only inside `tx`'s lock by senders.
    held: Arc<Mutex<Held>>,
    permits: Arc<Semaphore>,
    opts: QueueOptions,
    stats: Arc<Mutex<StatsCell>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    /// Woken after every commit that added events.
    appended: Arc<Notify>,
}

/// Handle to the durable queue; cheap to clone, shared by producers and forwarders.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens (or creates) the store in `opts.dir`, recovering from an unreadable file.
    pub fn open(opts: QueueOptions) -> Result<(Self, OpenReport), OpenError> {
        check_options(&opts)?;
        std::fs::create_dir_all(&opts.dir).map_err(|source| OpenError::Dir {
            path: opts.dir.clone(),
            source,
        })?;
        probe_writable(&opts.dir)?;
        let path = opts.dir.join(STORE_FILE);
        let mut report = OpenReport::default();
        let mut db = match open_db(&path, opts.cache_bytes) {
            Ok(db) => db,
            Err(Unusable::Fatal(e)) => return Err(e),
            Err(Unusable::Corrupt(reason)) => {
                let moved_to = quarantine(&path)?;
                tracing::error!(store = %path.display(), moved_to = %moved_to.display(), %reason,
                    "buffer store unreadable; moved aside and starting a fresh one");
                report.reset = Some(ResetInfo { moved_to, reason });
                open_db(&path, opts.cache_bytes).map_err(|e| match e {
                    Unusable::Fatal(e) => e,
                    Unusable::Corrupt(message) => OpenError::Storage {
                        path: path.clone(),
                        message,
                    },
                })?
            }
        };
        let (mut floor, found) = SeqFloor::read(&opts.dir);
        let storage = |e: redb::Error| OpenError::Storage {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut meta = read_or_init_meta(&db, &floor).map_err(storage)?;
        if meta.count == 0 {
            report.compacted = compact_if_bloated(&mut db, &path);
        }
        // Make sure the sidecar covers what this store has used, before anything new is used.
        floor
            .cover(meta.next_seq)
            .map_err(|source| OpenError::Dir {
                path: opts.dir.clone(),
                source,
            })?;
        if meta.next_seq == 0 {
            meta.next_seq = 1;
        }
        report.depth = meta.count;
        report.next_seq = meta.next_seq;

        let db = Arc::new(db);
        let stats = Arc::new(Mutex::new(StatsCell {
            depth: meta.count,
            bytes: meta.bytes,
            next_seq: meta.next_seq,
            dropped_total: meta.dropped_total,
            dead_letters: meta.dead_count,
            ..StatsCell::default()
        }));
        let (tx, rx) = mpsc::channel();
        let held = Arc::new(Mutex::new(Held::default()));
        let appended = Arc::new(Notify::new());
        let mut writer = Writer {
            appended: appended.clone(),
            db: db.clone(),
            opts: opts.clone(),
            meta,
            floor,
            stats: stats.clone(),
            last_drop_report: None,
            last_commit: None,
            requeues: 0,
            trim_at: None,
            unsynced_since: None,
            held: held.clone(),
        };
        if let Some(reset) = &report.reset {
            // Committed before open returns: the first thing a reader sees is why.
            writer.append_now(&reset_event(&opts.gateway_id, reset, &found));
        }
        let thread = std::thread::Builder::new()
            .name("buffer-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|source| OpenError::Dir {
                path: opts.dir.clone(),
                source,
            })?;
        let queue = Queue {
            inner: Arc::new(Inner {
                db: Mutex::new(Some(db)),
                tx: Mutex::new(Some(tx)),
                held,
                permits: Arc::new(Semaphore::new(opts.inflight_events)),
                opts,
                stats,
                thread: Mutex::new(Some(thread)),
                path,
                appended,
            }),
        };
        Ok((queue, report))
    }

    /// Hands a command to the writer. A routine append (with a shared commit configured)
    /// waits in the held list, and only the first of a window, or the one that fills a
    /// commit, wakes the writer; anything else first moves the held appends into the channel,
    /// so the writer gets every command in submission order.
    fn send(&self, cmd: Command) -> bool {
        let guard = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(tx) = guard.as_ref() else {
            return false;
        };
        let mut held = self
            .inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cmd.is_routine() && !self.inner.opts.routine_commit.is_zero() {
            let max = self.inner.opts.commit_max_events;
            let filled = held.weight < max && held.weight + cmd.weight() >= max;
            let first = held.commands.is_empty();
            held.weight += cmd.weight();
            held.commands.push(cmd);
            if (first || filled) && tx.send(Command::Wake { due: filled }).is_err() {
                if let Some(cmd) = held.commands.pop() {
                    held.weight -= cmd.weight();
                }
                return false;
            }
            return true;
        }
        held.weight = 0;
        for waiting in held.commands.drain(..) {
            if tx.send(waiting).is_err() {
                return false;
            }
        }
        tx.send(cmd).is_ok()
    }

    /// Appends events durably; returns their seqs once committed. Waits while the in-flight
    /// bound is exhausted. All or nothing: an oversized event refuses the whole call.
    pub async fn append(&self, events: &[SecurityEvent]) -> Result<Vec<u64>, QueueError> {
        self.append_with_state(events, None).await
    }

    /// Like [`Queue::append`], and stores `state` (a station's rule baselines, under its key)
    /// in the same transaction: after a crash both are there or neither.
    pub async fn append_with_state(
        &self,
        events: &[SecurityEvent],
        state: Option<(String, Vec<u8>)>,
    ) -> Result<Vec<u64>, QueueError> {
        if events.is_empty() && state.is_none() {
            return Ok(Vec::new());
        }
        self.submit(events, state, Commit::Now).await?.await
    }

    /// Hands events (and `state`, as in [`Queue::append_with_state`]) to the writer and
    /// returns without waiting for their commit; the [`Confirmation`] resolves once they are
    /// durable. Waits only while the in-flight bound is exhausted. Appends are committed in
    /// the order they were submitted. All or nothing, as `append`.
    pub async fn submit(
        &self,
        events: &[SecurityEvent],
        state: Option<(String, Vec<u8>)>,
        commit: Commit,
    ) -> Result<Confirmation, QueueError> {
        let mut encoded = Vec::with_capacity(events.len());
        for e in events {
            let enc = Encoded::new(e).map_err(|e| QueueError::encode(&e))?;
            if enc.record.len() > self.inner.opts.max_event_bytes {
                return Err(QueueError::TooLarge {
                    event_type: e.event_type.clone(),
                    size: enc.record.len(),
                    limit: self.inner.opts.max_event_bytes,
                });
            }
            encoded.push(enc);
        }
        let want = u32::try_from(encoded.len().clamp(1, self.inner.opts.inflight_events))
            .unwrap_or(u32::MAX);
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| QueueError::Closed)?;
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Append {
            events: encoded,
            state,
            reply,
            permit: Some(permit),
            commit,
        }) {
            return Err(QueueError::Closed);
        }
        Ok(Confirmation(rx))
    }

    /// Commits at once whatever was submitted before and is still waiting (routine appends
    /// sharing a commit); returns once that is durable.
    pub async fn flush(&self) -> Result<(), QueueError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Flush { reply }) {
            return Err(QueueError::Closed);
        }
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// The open database, or `Closed`.
    fn db(&self) -> Result<Arc<Database>, QueueError> {
        self.inner
            .db
            .lock()
            .ok()
            .and_then(|db| db.clone())
            .ok_or(QueueError::Closed)
    }

    /// The state stored under `key` by [`Queue::append_with_state`], if any.
    pub fn load_state(&self, key: &str) -> Result<Option<Vec<u8>>, QueueError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(QueueError::storage)?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(QueueError::storage(e)),
        };
        let value = table.get(key).map_err(QueueError::storage)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Deletes acknowledged events.
    pub async fn ack(&self, ack: Ack) -> Result<AckReport, QueueError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Ack { ack, reply }) {
            return Err(QueueError::Closed);
        }
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Moves rejected events (seq, reason) to the dead-letter table and stores `report` (the
    /// event that says so) in the same transaction. Returns how many were still queued.
    pub async fn dead_letter(
        &self,
        items: Vec<(u64, String)>,
        report: Option<&SecurityEvent>,
    ) -> Result<u64, QueueError> {
        let report = report
            .map(Encoded::new)
            .transpose()
            .map_err(|e| QueueError::encode(&e))?;
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::DeadLetter {
            items,
            report,
            reply,
        }) {
            return Err(QueueError::Closed);
        }
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Moves dead letters back into the queue (every one when `None`); returns how many.
    pub async fn requeue(&self, seqs: Option<Vec<u64>>) -> Result<u64, QueueError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Requeue { seqs, reply }) {
            return Err(QueueError::Closed);
        }
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// The dead letters, oldest seq first, at most `max`.
    pub fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(QueueError::storage)?;
        read_dead(&txn, max).map_err(|e| match e {
            DeadReadError::Storage(e) => QueueError::storage(e),
            DeadReadError::Record(e) => QueueError::Record(Arc::new(e)),
        })
    }

    /// Up to `max` events with seq > `after` (all from the start when `None`), in seq order.
    /// Reads a snapshot; cheap enough to call from async code for batches of thousands.
    pub fn peek(&self, after: Option<u64>, max: usize) -> Result<Vec<SecurityEvent>, QueueError> {
        self.peek_lane(Lane::All, after, max)
    }

    /// Like [`Queue::peek`], restricted to a lane: `Alerts` skips the telemetry backlog.
    pub fn peek_lane(
        &self,
        lane: Lane,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<SecurityEvent>, QueueError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(QueueError::storage)?;
        let telemetry = txn.open_table(TELEMETRY).map_err(QueueError::storage)?;
        let alerts = txn.open_table(ALERTS).map_err(QueueError::storage)?;
        let start = after.map_or(0, |s| s.saturating_add(1));
        let mut out = Vec::with_capacity(max.min(4096));
        let mut bad = None;
        store::read_range(
            &telemetry,
            &alerts,
            lane,
            start,
            max as u64,
            |seq, record| match store::decode(seq, record) {
                Ok(e) => out.push(e),
                Err(e) => {
                    bad.get_or_insert(e);
                }
            },
        )
        .map_err(QueueError::storage)?;
        match bad {
            Some(e) => Err(QueueError::Record(Arc::new(e))),
            None => Ok(out),
        }
    }

    /// Current counters plus the oldest buffered event.
    pub fn stats(&self) -> QueueStats {
        let cell = self
            .inner
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let oldest = self.peek(None, 1).ok().and_then(|v| v.into_iter().next());
        QueueStats {
            depth: cell.depth,
            bytes: cell.bytes,
            quota_bytes: self.inner.opts.quota_bytes,
            next_seq: cell.next_seq,
            oldest_seq: oldest.as_ref().map(|e| e.seq),
            oldest_timestamp: oldest.map(|e| e.timestamp.to_string()),
            dropped_total: cell.dropped_total.iter().sum(),
            commits: cell.commits,
            unsynced_commits: cell.unsynced_commits,
            failed_commits: cell.failed_commits,
            dead_letters: cell.dead_letters,
            requeues: cell.requeues,
            file_bytes: std::fs::metadata(&self.inner.path).map_or(0, |m| m.len()),
        }
    }

    /// How many requeues of dead letters have happened (a reader keeping a cursor rescans
    /// when it changes). Cheap: no read transaction.
    pub fn stats_requeues(&self) -> u64 {
        self.inner.stats.lock().map_or(0, |s| s.requeues)
    }

    /// Age of the oldest buffered event, for health and metrics.
    pub fn oldest_age(&self) -> Option<Duration> {
        let oldest = self.peek(None, 1).ok()?.into_iter().next()?;
        let micros = Timestamp::now().as_micros() - oldest.timestamp.as_micros();
        Some(Duration::from_micros(u64::try_from(micros).unwrap_or(0)))
    }

    /// Woken after each commit that added events; register (`notified()`, `enable()`) before
    /// peeking so no wake-up is lost between an empty peek and the wait.
    pub fn appended(&self) -> Arc<Notify> {
        self.inner.appended.clone()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Commits everything queued so far and stops the writer. Later calls fail with
    /// [`QueueError::Closed`]. Idempotent; returns when the writer has finished.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        let sent = self.send(Command::Close { reply });
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        self.inner.permits.close();
        if sent {
            let _ = done.await;
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        if let Ok(mut db) = self.inner.db.lock() {
            db.take();
        }
    }
}

/// The event that explains a fresh store and the gap in seq it may cause.
fn reset_event(gateway_id: &str, reset: &ResetInfo, floor: &Found) -> SecurityEvent {
    let floor_note = match floor {
        Found::Value(v) => format!("sequence resumes above the recorded floor {v}"),
        Found::Missing => "no sequence floor was recorded; sequence restarts".to_owned(),
        Found::Unreadable(why) => format!("sequence floor unreadable ({why}); sequence restarts"),
    };
    SecurityEvent::new(gateway_id, EventType::AgentBufferReset)
        .context("source", "buffer")
        .data("moved_to", reset.moved_to.display().to_string())
        .data("reason", reset.reason.clone())
        .data("sequence", floor_note)
}

fn check_options(opts: &QueueOptions) -> Result<(), OpenError> {
    let fail = |m: String| Err(OpenError::Options(m));
    if opts.max_event_bytes == 0 || opts.quota_bytes < 16 * opts.max_event_bytes as u64 {
        return fail(format!(
            "quota_bytes ({}) must hold at least 16 events of max_event_bytes ({})",
            opts.quota_bytes, opts.max_event_bytes
        ));
    }
    if opts.commit_max_events == 0 || opts.inflight_events == 0 {
        return fail("commit_max_events and inflight_events must be at least 1".into());
    }
    if !(1..=99).contains(&opts.high_watermark_percent) {
        return fail("high_watermark_percent must be between 1 and 99".into());
    }
    Ok(())
}

/// Fails early, with the directory named, when the data directory is not writable.
fn probe_writable(dir: &Path) -> Result<(), OpenError> {
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| OpenError::Dir {
            path: dir.to_path_buf(),
            source,
        })
}

enum Unusable {
    Corrupt(String),
    Fatal(OpenError),
}

/// Opens the store with a full integrity check; a panic inside redb counts as corruption.
fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, Unusable> {
    let attempt = catch_unwind(AssertUnwindSafe(|| {
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(cache_bytes)
            .create(path)?;
        check_layout(&db)?;
        Ok::<_, DbOpenError>(db)
    }));
    match attempt {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(DbOpenError::Db(DatabaseError::DatabaseAlreadyOpen))) => {
            Err(Unusable::Fatal(OpenError::Locked {
                path: path.to_path_buf(),
            }))
        }
        Ok(Err(DbOpenError::Db(DatabaseError::Storage(redb::StorageError::Io(e)))))
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Err(Unusable::Fatal(OpenError::Storage {
                path: path.to_path_buf(),
                message: e.to_string(),
            }))
        }
        Ok(Err(e)) => Err(Unusable::Corrupt(e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic while opening".to_owned());
            Err(Unusable::Corrupt(format!(
                "redb failed on the file: {what}"
            )))
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum DbOpenError {
    #[error(transparent)]
    Db(#[from] DatabaseError),
    #[error("{0}")]
    Layout(String),
}

impl From<redb::Error> for DbOpenError {
    fn from(e: redb::Error) -> Self {
        DbOpenError::Layout(e.to_string())
    }
}

/// A store written by another program or another layout version is not ours to trust.
fn check_layout(db: &Database) -> Result<(), DbOpenError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let layout = match txn.open_table(META) {
        Ok(t) => t
            .get("layout")
            .map_err(redb::Error::from)?
            .map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(redb::Error::from(e).into()),
    };
    let has_events = match txn.open_table(ALERTS) {
        Ok(t) => t.first().map_err(redb::Error::from)?.is_some(),
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(redb::Error::from(e).into()),
    };
    match layout {
        Some(LAYOUT_VERSION) => Ok(()),
        None if !has_events => Ok(()),
        Some(v) => Err(DbOpenError::Layout(format!(
            "store layout version {v}; this build reads version {LAYOUT_VERSION}"
        ))),
        None => Err(DbOpenError::Layout(
            "events without a layout version".into(),
        )),
    }
}

fn quarantine(path: &Path) -> Result<PathBuf, OpenError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let moved_to = path.with_file_name(format!("{STORE_FILE}.corrupt-{stamp}"));
    std::fs::rename(path, &moved_to).map_err(|source| OpenError::Quarantine {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(moved_to)
}

/// Loads the counters; on a new store, creates the tables and starts above the seq floor.
fn read_or_init_meta(db: &Database, floor: &SeqFloor) -> Result<Meta, redb::Error> {
    let txn = db.begin_write()?;
    let meta = {
        let mut table = txn.open_table(META)?;
        txn.open_table(ALERTS)?;
        txn.open_table(TELEMETRY)?;
        let mut meta = Meta::load(&table)?;
        if table.get("layout")?.is_none() {
            table.insert("layout", LAYOUT_VERSION)?;
            meta.next_seq = floor.reserved().max(1);
            meta.store(&mut table)?;
        }
        meta
    };
    txn.commit()?;
    Ok(meta)
}

/// Compacts an empty store whose file is much larger than a fresh one needs.
fn compact_if_bloated(db: &mut Database, path: &Path) -> bool {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if len < 64 << 20 {
        return false;
    }
    match db.compact() {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, store = %path.display(), "compaction failed; continuing");
            false
        }
    }
}

#[cfg(test)]
mod tests;
