//! The group-commit writer: one thread owns every write transaction.
//!
//! Appends and acks arrive as commands. The thread takes one command, then everything
//! already queued behind it (up to `commit_max_events`), and applies the lot in one durable
//! transaction. While one fsync runs, the next batch gathers, so batches grow with load.
//!
//! Routine appends share a commit. An append submitted as [`Commit::Routine`] (a station's
//! info-level reports: measurement reports, status changes below warn) waits up to
//! `routine_commit` (`buffer.routine_commit_ms`) from the first routine append of the batch,
//! so many stations polling at the same interval cost about one fsync per `routine_commit`
//! instead of one per burst of appends. Anything else commits at once and takes the waiting
//! routine appends with it, in arrival order: an append of severity warn or above
//! ([`Commit::Now`]), acks, dead-letter moves and requeues, a flush, and closing.
//! The added durability delay of a routine append is therefore at most `routine_commit`
//! (plus the commit itself); until its commit it is not confirmed, so its caller must not
//! treat it as durable, and a crash or kill in that window loses it like any unconfirmed
//! append. A clean shutdown loses nothing: closing commits what waits. With
//! `routine_commit` 0 every append commits at once, as before.
//! Routine appends do not travel through the channel while they wait: they go into a held
//! list ([`Held`]) and only the first of a window (or the one that fills a commit) wakes this
//! thread; the commit takes the list along. Any other command first moves the held appends
//! into the channel, so the thread still sees every command in submission order.
//!
//! Linger is opt-in (`commit_linger`, default 0) and adaptive, for batches that commit at
//! once. When appends trickle in (fewer than four commands gathered, and the last commit
//! less than 20 ms ago), the writer waits up to `commit_linger` for more. A closed loop of
//! many appenders arrives as one large batch and is committed at once. It stays off by
//! default because a single caller that waits for each confirmation (a forwarder acking
//! batch after batch) looks like a trickle and would pay the linger on every call
//! (measured: ack throughput fell from 118 % to 36 % of raw redb).
//! Every command is answered only after its transaction committed; if the commit fails,
//! every command in it gets the error and the in-memory counters roll back.
//!
//! A transaction that only deletes acknowledged events is committed without an fsync
//! (redb's `Durability::None`) when the last synced commit is less than [`ACK_SYNC_WITHIN`]
//! old; the next synced commit (any append, a flush, the idle tick once that time has passed,
//! or closing) makes it durable. A crash in between loses only deletions: those events are
//! still stored and are forwarded again, which receivers already expect (delivery is at
//! least once, and the collector keys on the event id). Nothing that adds or moves an event
//! is ever committed that way. On a gateway that forwards as it polls, the forwarder's acks
//! were half of all fsyncs.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::seqfloor::SeqFloor;
use super::store::{DeadRecord, Encoded, Meta, Tables, DEAD, META, STATE};
use super::{Ack, AckReport, Commit, QueueError, QueueOptions, StatsCell};
use linesentry_event::{EventType, SecurityEvent, Timestamp};

pub(super) enum Command {
    Append {
        events: Vec<Encoded>,
        /// Station state to store with these events (key, bytes).
        state: Option<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<Vec<u64>, QueueError>>,
        permit: Option<OwnedSemaphorePermit>,
        commit: Commit,
    },
    Ack {
        ack: Ack,
        reply: oneshot::Sender<Result<AckReport, QueueError>>,
    },
    /// Move events to the dead-letter table (seq, reason), storing `report` with them.
    DeadLetter {
        items: Vec<(u64, String)>,
        report: Option<Encoded>,
        reply: oneshot::Sender<Result<u64, QueueError>>,
    },
    /// Move dead letters back into the queue (all when `None`).
    Requeue {
        seqs: Option<Vec<u64>>,
        reply: oneshot::Sender<Result<u64, QueueError>>,
    },
    /// Commit what is queued or waiting now; answered once it is durable.
    Flush {
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    /// Finish what is queued before this, then stop.
    Close { reply: oneshot::Sender<()> },
    /// Routine appends wait in [`Held`]: the first one starts the shared commit's window,
    /// `due` (they reached `commit_max_events`) ends it at once.
    Wake { due: bool },
}

impl Command {
    /// An append that may wait for a shared commit.
    pub(super) fn is_routine(&self) -> bool {
        matches!(
            self,
            Command::Append {
                commit: Commit::Routine,
                ..
            }
        )
    }
}

/// Routine appends waiting for their shared commit, outside the channel, so that only the
/// first of a window wakes the writer thread (instead of one futex wake-up per station per
/// poll). The queue's `send` moves them into the channel ahead of any other command, under
/// the same lock, so the writer still sees every command in the order it was submitted:
/// whatever waits here was submitted after everything already in the channel.
#[derive(Default)]
pub(super) struct Held {
    pub(super) commands: Vec<Command>,
    pub(super) weight: usize,
}

impl Command {
    pub(super) fn weight(&self) -> usize {
        match self {
            Command::Append { events, .. } => events.len(),
            _ => 1,
        }
    }
}

/// Commands gathered for one transaction.
#[derive(Default)]
struct Batch {
    commands: Vec<Command>,
    weight: usize,
    /// Something in it must not wait: commit as soon as gathering stops.
    urgent: bool,
    /// When the routine appends in it must be committed at the latest.
    deadline: Option<Instant>,
}

impl Batch {
    /// Adds a command; a `Close` ends gathering instead (returns false). A routine append
    /// sets the deadline (`routine_commit` from the first one); anything else makes the
    /// batch urgent.
    fn push(
        &mut self,
        cmd: Command,
        closing: &mut Option<oneshot::Sender<()>>,
        routine_commit: Duration,
    ) -> bool {
        match cmd {
            Command::Close { reply } => {
                *closing = Some(reply);
                return false;
            }
            Command::Wake { due } => {
                self.deadline
                    .get_or_insert_with(|| Instant::now() + routine_commit);
                self.urgent |= due;
                return true;
            }
            _ => {}
        }
        if cmd.is_routine() && !routine_commit.is_zero() {
            self.deadline
                .get_or_insert_with(|| Instant::now() + routine_commit);
        } else {
            self.urgent = true;
        }
        self.weight += cmd.weight();
        self.commands.push(cmd);
        true
    }

    /// Nothing gathered and no routine window open.
    fn is_idle(&self) -> bool {
        self.commands.is_empty() && self.deadline.is_none()
    }

    /// Whether gathering should stop and the batch be committed now.
    fn due(&self, max: usize) -> bool {
        self.urgent || self.weight >= max || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

pub(super) struct Writer {
    pub(super) appended: Arc<tokio::sync::Notify>,
    pub(super) db: Arc<Database>,
    pub(super) opts: QueueOptions,
    pub(super) meta: Meta,
    pub(super) floor: SeqFloor,
    pub(super) stats: Arc<Mutex<StatsCell>>,
    pub(super) last_drop_report: Option<Instant>,
    /// When the last commit finished (adaptive linger).
    pub(super) last_commit: Option<Instant>,
    /// Requeue commands that moved something, so readers know to rescan from the head.
    pub(super) requeues: u64,
    /// When to hand the memory of a large batch back to the system (see [`super::trim`]).
    pub(super) trim_at: Option<Instant>,
    /// When the first ack commit without fsync since the last synced commit was made.
    pub(super) unsynced_since: Option<Instant>,
    /// Routine appends submitted without waking the thread (shared with the queue's `send`).
    pub(super) held: Arc<Mutex<Held>>,
}

/// What a command asks of the transaction, apart from where its answer goes.
enum Work {
    Append(Vec<Encoded>, Option<(String, Vec<u8>)>),
    Ack(Ack),
    DeadLetter(Vec<(u64, String)>, Option<Encoded>),
    Requeue(Option<Vec<u64>>),
}

/// Where an answer goes, kept apart so a failed commit can still answer everyone.
enum ReplyTo {
    Append(oneshot::Sender<Result<Vec<u64>, QueueError>>),
    Ack(oneshot::Sender<Result<AckReport, QueueError>>),
    Moved(oneshot::Sender<Result<u64, QueueError>>),
}

enum Done {
    Appended(Vec<u64>),
    Acked(AckReport),
    Moved(u64),
}

/// The work only deletes acknowledged events (and is not empty).
fn only_acks(work: &[Work]) -> bool {
    !work.is_empty() && work.iter().all(|w| matches!(w, Work::Ack(_)))
}

/// Dead letters kept at most (count); the byte bound is a share of the quota.
pub(super) const DEAD_MAX_COUNT: u64 = 10_000;
pub(super) const DEAD_QUOTA_SHARE: u64 = 8;

const IDLE_TICK: Duration = Duration::from_millis(500);
/// Batches smaller than this, following a commit closer than `TRICKLE_GAP`, linger.
const TRICKLE_COMMANDS: usize = 4;
const TRICKLE_GAP: Duration = Duration::from_millis(20);
/// A commit of at least this many events was a burst: its memory is released [`TRIM_DELAY`]
/// later, once the appenders have dropped their copies too.
const TRIM_AFTER_EVENTS: usize = 1024;
const TRIM_DELAY: Duration = Duration::from_secs(1);
/// Ack-only commits skip the fsync for at most this long after the last synced commit.
pub(super) const ACK_SYNC_WITHIN: Duration = Duration::from_secs(1);

impl Writer {
    pub(super) fn run(mut self, rx: &Receiver<Command>) {
        let mut closing: Option<oneshot::Sender<()>> = None;
        let max = self.opts.commit_max_events;
        let routine = self.opts.routine_commit;
        // Gathered and not yet committed: routine appends wait here for their deadline.
        let mut batch = Batch::default();
        let mut stopping = false;
        while !stopping {
            let wait = batch
                .deadline
                .map_or(IDLE_TICK, |d| d.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    if batch.push(cmd, &mut closing, routine) {
                        while batch.weight < max {
                            match rx.try_recv() {
                                Ok(cmd) => {
                                    if !batch.push(cmd, &mut closing, routine) {
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if batch.is_idle() {
                        if self.drop_report_due() || self.sync_due() {
                            self.commit(Vec::new());
                        }
                        self.trim_if_due();
                        continue;
                    }
                }
                // Every handle is gone: commit what waits, then stop.
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            stopping |= closing.is_some();
            if !stopping && !batch.due(max) {
                continue;
            }
            if !stopping && batch.deadline.is_none() {
                self.linger(rx, &mut batch, &mut closing);
            }
            let left = self.take_held(&mut batch, if stopping { usize::MAX } else { max });
            if batch.weight >= TRIM_AFTER_EVENTS {
                self.trim_at = Some(Instant::now() + TRIM_DELAY);
            }
            let commands = std::mem::take(&mut batch).commands;
            if !commands.is_empty() || self.drop_report_due() {
                self.commit(commands);
            }
            if left {
                // More routine appends than one commit takes: the next commit follows at once.
                batch.deadline = Some(Instant::now());
            }
            self.trim_if_due();
            stopping |= closing.is_some();
        }
        if self.unsynced_since.is_some() {
            // Closing, or every handle dropped: the last acks go to disk before the file is.
            self.commit(Vec::new());
        }
        if let Some(reply) = closing {
            let _ = reply.send(());
        }
    }

    /// Moves held routine appends into `batch`, oldest first, up to `max` events in all (at
    /// least one); returns whether some are left.
    fn take_held(&self, batch: &mut Batch, max: usize) -> bool {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut taken, mut weight) = (0, 0);
        for cmd in &held.commands {
            if taken > 0 && batch.weight + weight + cmd.weight() > max {
                break;
            }
            weight += cmd.weight();
            taken += 1;
        }
        held.weight -= weight;
        batch.weight += weight;
        batch.commands.extend(held.commands.drain(..taken));
        !held.commands.is_empty()
    }

    /// The adaptive linger (`commit_linger`): a trickle of urgent commands waits a little
    /// for more to share their commit.
    fn linger(
        &self,
        rx: &Receiver<Command>,
        batch: &mut Batch,
        closing: &mut Option<oneshot::Sender<()>>,
    ) {
        let trickle = batch.commands.len() < TRICKLE_COMMANDS
            && self.last_commit.is_some_and(|t| t.elapsed() < TRICKLE_GAP);
        if !trickle || self.opts.commit_linger.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.opts.commit_linger;
        let max = self.opts.commit_max_events;
        while batch.weight < max && closing.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(cmd) => {
                    if !batch.push(cmd, closing, self.opts.routine_commit) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// Commits one event on the caller's thread, before the writer thread starts.
    pub(super) fn append_now(&mut self, event: &SecurityEvent) {
        match Encoded::new(event) {
            Ok(encoded) => {
                let (reply, _) = oneshot::channel();
                self.commit(vec![Command::Append {
                    events: vec![encoded],
                    state: None,
                    reply,
                    permit: None,
                    commit: Commit::Now,
                }]);
            }
            Err(e) => tracing::error!(error = %e, "could not encode {}", event.event_type),
        }
    }

    fn trim_if_due(&mut self) {
        if self.trim_at.is_some_and(|at| Instant::now() >= at) {
            self.trim_at = None;
            super::trim::release_free_memory();
        }
    }

    /// Ack commits without fsync are older than [`ACK_SYNC_WITHIN`].
    fn sync_due(&self) -> bool {
        self.unsynced_since
            .is_some_and(|t| t.elapsed() >= ACK_SYNC_WITHIN)
    }

    fn drop_report_due(&self) -> bool {
        self.meta.pending_drops() > 0
            && self
                .last_drop_report
                .is_none_or(|t| t.elapsed() >= self.opts.drop_report_interval)
    }

    /// Applies a batch in one durable transaction and answers every command in it.
    fn commit(&mut self, batch: Vec<Command>) {
        let mut work = Vec::with_capacity(batch.len());
        let mut reply_to = Vec::with_capacity(batch.len());
        let mut permits = Vec::new();
        let mut flushes = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Append {
                    events,
                    state,
                    reply,
                    permit,
                    commit: _,
                } => {
                    work.push(Work::Append(events, state));
                    reply_to.push(ReplyTo::Append(reply));
                    permits.extend(permit);
                }
                Command::Ack { ack, reply } => {
                    work.push(Work::Ack(ack));
                    reply_to.push(ReplyTo::Ack(reply));
                }
                Command::DeadLetter {
                    items,
                    report,
                    reply,
                } => {
                    work.push(Work::DeadLetter(items, report));
                    reply_to.push(ReplyTo::Moved(reply));
                }
                Command::Requeue { seqs, reply } => {
                    work.push(Work::Requeue(seqs));
                    reply_to.push(ReplyTo::Moved(reply));
                }
                Command::Flush { reply } => flushes.push(reply),
                Command::Close { .. } | Command::Wake { .. } => {}
            }
        }
        if work.is_empty() && !self.drop_report_due() && self.unsynced_since.is_none() {
            // Only flushes: everything before them is already committed and synced.
            for reply in flushes {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        let before = self.meta.clone();
        let seq_before = before.next_seq;
        let requeues_before = self.requeues;
        // A flush is answered once everything before it is on disk, never unsynced.
        let acks_only = flushes.is_empty() && only_acks(&work);
        let outcome = self.apply(work, acks_only);
        match &outcome {
            Ok((_, true)) => self.last_drop_report = Some(Instant::now()),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, commands = reply_to.len(), "buffer commit failed; nothing in it was confirmed");
                self.meta = before;
            }
        }
        self.last_commit = Some(Instant::now());
        self.publish_stats(outcome.is_err());
        if outcome.is_ok() && (self.meta.next_seq != seq_before || self.requeues != requeues_before)
        {
            self.appended.notify_waiters();
        }
        for reply in flushes {
            let _ = reply.send(outcome.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        match outcome {
            Ok((done, _)) => {
                for (to, done) in reply_to.into_iter().zip(done) {
                    match (to, done) {
                        (ReplyTo::Append(tx), Done::Appended(seqs)) => {
                            let _ = tx.send(Ok(seqs));
                        }
                        (ReplyTo::Ack(tx), Done::Acked(report)) => {
                            let _ = tx.send(Ok(report));
                        }
                        (ReplyTo::Moved(tx), Done::Moved(n)) => {
                            let _ = tx.send(Ok(n));
                        }
                        // `apply` answers each work item with its own kind, in order.
                        _ => {}
                    }
                }
            }
            Err(e) => {
                for to in reply_to {
                    match to {
                        ReplyTo::Append(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        ReplyTo::Ack(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        ReplyTo::Moved(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        drop(permits);
    }

    /// Returns one `Done` per work item, in order, and whether a drop report was written.
    /// `acks_only`: the work only deletes, so the commit may skip its fsync (module docs).
    fn apply(&mut self, work: Vec<Work>, acks_only: bool) -> Result<(Vec<Done>, bool), QueueError> {
        let seq_at_start = self.meta.next_seq;
        let mut txn = self.db.begin_write().map_err(QueueError::storage)?;
        txn.set_durability(Durability::Immediate)
            .map_err(QueueError::storage)?;
        let quota = self.opts.quota_bytes;
        let mut done = Vec::with_capacity(work.len());
        let mut reported_drop = false;
        {
            let mut tables = Tables::open(&txn).map_err(QueueError::storage)?;
            for item in work {
                match item {
                    Work::Append(mut events, state) => {
                        if let Some((key, bytes)) = state {
                            let mut table = txn.open_table(STATE).map_err(QueueError::storage)?;
                            table
                                .insert(key.as_str(), bytes.as_slice())
                                .map_err(QueueError::storage)?;
                        }
                        let mut seqs = Vec::with_capacity(events.len());
                        for e in &mut events {
                            seqs.push(
                                tables
                                    .insert(&mut self.meta, quota, e)
                                    .map_err(QueueError::storage)?,
                            );
                        }
                        done.push(Done::Appended(seqs));
                    }
                    Work::Ack(Ack::UpTo(seq)) => {
                        let removed = tables
                            .remove_up_to(&mut self.meta, seq)
                            .map_err(QueueError::storage)?;
                        done.push(Done::Acked(AckReport { removed }));
                    }
                    Work::Ack(Ack::Seqs(seqs)) => {
                        let mut removed = 0;
                        for seq in seqs {
                            if tables
                                .remove(&mut self.meta, seq)
                                .map_err(QueueError::storage)?
                            {
                                removed += 1;
                            }
                        }
                        done.push(Done::Acked(AckReport { removed }));
                    }
                    Work::DeadLetter(items, report) => {
                        let moved = self.dead_letter(&txn, &mut tables, &items)?;
                        if let Some(mut report) = report {
                            tables
                                .insert(&mut self.meta, quota, &mut report)
                                .map_err(QueueError::storage)?;
                        }
                        done.push(Done::Moved(moved));
                    }
                    Work::Requeue(seqs) => {
                        let moved = self.requeue(&txn, &mut tables, seqs)?;
                        done.push(Done::Moved(moved));
                    }
                }
            }
            // The buffer reports on itself in the same transaction that changed it.
            if self.drop_report_due() {
                // Make room for the report before summarising, so an eviction it causes is
                // in this report and does not start the next one.
                let mut event = self.agent_event(EventType::AgentBufferDropped);
                event.event_data = self.meta.pending_summary();
                event.event_data.insert("quota_bytes".into(), quota.into());
                let draft = Encoded::new(&event).map_err(|e| QueueError::encode(&e))?;
                tables
                    .make_room(&mut self.meta, quota, draft.cost() + 64)
                    .map_err(QueueError::storage)?;
                event.event_data = self.meta.pending_summary();
                event.event_data.insert("quota_bytes".into(), quota.into());
                self.meta.clear_pending();
                let mut encoded = Encoded::new(&event).map_err(|e| QueueError::encode(&e))?;
                tables
                    .insert(&mut self.meta, quota, &mut encoded)
                    .map_err(QueueError::storage)?;
                reported_drop = true;
            }
            self.check_watermark(&mut tables)?;
        }
        {
            let mut meta = txn.open_table(META).map_err(QueueError::storage)?;
            self.meta.store(&mut meta).map_err(QueueError::storage)?;
        }
        self.floor
            .cover(self.meta.next_seq)
            .map_err(|e| QueueError::Io(Arc::new(e)))?;
        let only_deletes = acks_only && !reported_drop && self.meta.next_seq == seq_at_start;
        self.finish(txn, only_deletes)?;
        Ok((done, reported_drop))
    }

    /// Commits `txn`, without its fsync when it `only_deletes` and the last synced commit
    /// is recent enough (module docs).
    fn finish(&mut self, mut txn: WriteTransaction, only_deletes: bool) -> Result<(), QueueError> {
        let defer_sync = only_deletes
            && self
                .unsynced_since
                .is_none_or(|t| t.elapsed() < ACK_SYNC_WITHIN);
        if defer_sync {
            txn.set_durability(Durability::None)
                .map_err(QueueError::storage)?;
        }
        txn.commit().map_err(QueueError::storage)?;
        self.unsynced_since = if defer_sync {
            Some(self.unsynced_since.unwrap_or_else(Instant::now))
        } else {
            None
        };
        Ok(())
    }

    /// Moves the named events into the dead-letter table; returns how many were there.
    /// Over its bounds the oldest dead letters go, counted as drops like evictions.
    fn dead_letter(
        &mut self,
        txn: &redb::WriteTransaction,
        tables: &mut Tables<'_>,
        items: &[(u64, String)],
    ) -> Result<u64, QueueError> {
        let mut dead = txn.open_table(DEAD).map_err(QueueError::storage)?;
        let now = Timestamp::now().as_micros();
        let mut moved = 0;
        for (seq, reason) in items {
            let Some(record) = tables
                .take(&mut self.meta, *seq)
                .map_err(QueueError::storage)?
            else {
                continue;
            };
            let value = DeadRecord::encode(reason, now, &record);
            self.meta.dead_bytes += value.len() as u64;
            self.meta.dead_count += 1;
            dead.insert(*seq, value.as_slice())
                .map_err(QueueError::storage)?;
            moved += 1;
        }
        let max_bytes = self.opts.quota_bytes / DEAD_QUOTA_SHARE;
        while self.meta.dead_count > DEAD_MAX_COUNT || self.meta.dead_bytes > max_bytes {
            let Some((seq, value)) = dead.pop_first().map_err(QueueError::storage)? else {
                break;
            };
            let (seq, value) = (seq.value(), value.value().to_vec());
            self.meta.dead_count = self.meta.dead_count.saturating_sub(1);
            self.meta.dead_bytes = self.meta.dead_bytes.saturating_sub(value.len() as u64);
            let severity = DeadRecord::decode(seq, &value)
                .ok()
                .and_then(|d| d.record.get(1).copied())
                .unwrap_or(0);
            self.meta.note_drop(seq, usize::from(severity).min(4));
        }
        Ok(moved)
    }

    /// Moves dead letters back under their own seq, so they are forwarded again.
    fn requeue(
        &mut self,
        txn: &redb::WriteTransaction,
        tables: &mut Tables<'_>,
        seqs: Option<Vec<u64>>,
    ) -> Result<u64, QueueError> {
        let mut dead = txn.open_table(DEAD).map_err(QueueError::storage)?;
        let seqs = if let Some(seqs) = seqs {
            seqs
        } else {
            let mut all = Vec::new();
            for item in dead.iter().map_err(QueueError::storage)? {
                all.push(item.map_err(QueueError::storage)?.0.value());
            }
            all
        };
        let quota = self.opts.quota_bytes;
        let mut moved = 0;
        for seq in seqs {
            let Some(value) = dead.remove(seq).map_err(QueueError::storage)? else {
                continue;
            };
            let value = value.value().to_vec();
            self.meta.dead_count = self.meta.dead_count.saturating_sub(1);
            self.meta.dead_bytes = self.meta.dead_bytes.saturating_sub(value.len() as u64);
            let record = DeadRecord::decode(seq, &value)
                .map_err(|e| QueueError::Record(Arc::new(e)))?
                .record;
            tables
                .restore(&mut self.meta, quota, seq, record)
                .map_err(QueueError::storage)?;
            moved += 1;
        }
        if moved > 0 {
            self.requeues += 1;
        }
        Ok(moved)
    }

    /// `agent.buffer_high` when crossing the watermark upwards; re-armed 10 points below.
    fn check_watermark(&mut self, tables: &mut Tables<'_>) -> Result<(), QueueError> {
        let quota = self.opts.quota_bytes;
        let percent = self.meta.bytes.saturating_mul(100) / quota.max(1);
        let high = u64::from(self.opts.high_watermark_percent);
        if self.meta.high_active == 0 && percent >= high {
            self.meta.high_active = 1;
            let event = self
                .agent_event(EventType::AgentBufferHigh)
                .data("used_bytes", self.meta.bytes)
                .data("quota_bytes", quota)
                .data("used_percent", percent)
                .data("limit_percent", high)
                .data("depth", self.meta.count);
            let mut encoded = Encoded::new(&event).map_err(|e| QueueError::encode(&e))?;
            tables
                .insert(&mut self.meta, quota, &mut encoded)
                .map_err(QueueError::storage)?;
        } else if self.meta.high_active == 1 && percent + 10 < high {
            self.meta.high_active = 0;
        }
        Ok(())
    }

    fn agent_event(&self, event_type: EventType) -> SecurityEvent {
        SecurityEvent::new(self.opts.gateway_id.clone(), event_type)
            .at(Timestamp::now())
            .context("source", "buffer")
    }

    fn publish_stats(&self, failed: bool) {
        if let Ok(mut s) = self.stats.lock() {
            if failed {
                s.failed_commits += 1;
            } else if self.unsynced_since.is_some() {
                s.unsynced_commits += 1;
            }
            s.depth = self.meta.count;
            s.bytes = self.meta.bytes;
            s.next_seq = self.meta.next_seq;
            s.dropped_total = self.meta.dropped_total;
            s.commits += 1;
            s.requeues = self.requeues;
            s.dead_letters = self.meta.dead_count;
        }
    }
}
