//! The forwarding loop: queue head -> sink -> ack, with priority, pacing and dead letters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Pushed, Sink, SinkError, TokenBucket};
use crate::buffer::{Ack, Lane, Queue, QueueError};
use crate::health::{FailureKind, Heartbeat, SinkMetrics};
use linesentry_common::Backoff;
use linesentry_event::{EventType, SecurityEvent, SeverityMap};

/// A batch at least this large whose every event is rejected alone is a systemic refusal
/// (wrong endpoint, unknown gateway), retried instead of dead-lettered.
const SYSTEMIC_REJECTION: usize = 8;

/// Defaults of [`Pacing`], and of the `[forward]` keys that set them.
pub const DEFAULT_BATCH_EVENTS: usize = 1000;
pub const DEFAULT_REPLAY_EVENTS_PER_SECOND: u32 = 25_000;
pub const DEFAULT_REPLAY_JITTER: Duration = Duration::from_secs(2);
pub const DEFAULT_UPSTREAM_DOWN_AFTER: Duration = Duration::from_secs(60);

/// How a forwarder paces its rounds and when it reports the upstream down: what the
/// `[forward]` section sets (`forward::ForwardSettings`), owned here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Events read from the queue per round.
    pub batch_events: usize,
    /// Telemetry events per second, at most (alerts are not held back).
    pub replay_events_per_second: u32,
    /// After an outage, telemetry waits a random delay up to this before replaying.
    pub replay_jitter: Duration,
    /// The upstream counts as down (`forward.upstream_down`) after failing this long.
    pub upstream_down_after: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            batch_events: DEFAULT_BATCH_EVENTS,
            replay_events_per_second: DEFAULT_REPLAY_EVENTS_PER_SECOND,
            replay_jitter: DEFAULT_REPLAY_JITTER,
            upstream_down_after: DEFAULT_UPSTREAM_DOWN_AFTER,
        }
    }
}

/// How a forwarder paces and reports.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    pub gateway_id: String,
    pub pacing: Pacing,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Severities for the events the forwarder itself raises.
    pub severities: Arc<SeverityMap>,
}

impl ForwardOptions {
    pub fn new(gateway_id: impl Into<String>) -> Self {
        Self {
            gateway_id: gateway_id.into(),
            pacing: Pacing::default(),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
            severities: Arc::new(SeverityMap::default()),
        }
    }
}

/// Counters a forwarder keeps, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardCounters {
    pub batches: u64,
    pub events: u64,
    pub failures: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
}

/// Live counters, shared with metrics.
#[derive(Debug, Default)]
pub struct ForwardStats {
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub failures: AtomicU64,
    pub rejected: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Milliseconds since the Unix epoch of the last confirmed delivery (0: none yet).
    pub last_delivery_ms: AtomicU64,
}

impl ForwardStats {
    pub fn snapshot(&self) -> ForwardCounters {
        ForwardCounters {
            batches: self.batches.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// Where a round stopped.
enum Round {
    /// Delivered a batch.
    Sent,
    /// Nothing to send now.
    Idle,
    /// Telemetry is being held back (rate limit or post-outage jitter) until then.
    Held(Instant),
}

#[derive(Debug)]
pub struct Forwarder<S> {
    queue: Queue,
    sink: S,
    opts: ForwardOptions,
    backoff: Backoff,
    bucket: TokenBucket,
    stats: Arc<ForwardStats>,
    /// Since when nothing could be delivered, while events waited.
    failing_since: Option<Instant>,
    down_reported: bool,
    /// Telemetry is held until then after an outage (jitter).
    hold_until: Option<Instant>,
    last_error: String,
    metrics: Option<SinkMetrics>,
    beat: Option<Heartbeat>,
    /// Per lane (alerts, telemetry): the last seq the receiver confirmed whose ack may
    /// still be committing, so the next read starts after it while the ack commits.
    cursor: [Option<u64>; 2],
    /// The one ack in flight, if any.
    pending_ack: Option<tokio::task::JoinHandle<Result<crate::buffer::AckReport, QueueError>>>,
    requeues_seen: u64,
    /// Events pushed to the sink and not confirmed yet (they stay in the queue).
    outstanding: usize,
    /// The next round sends and waits (`Sink::send`), narrowing a rejection down: set
    /// after a pipelined push was rejected.
    careful: bool,
}

impl<S: Sink> Forwarder<S> {
    pub fn new(queue: Queue, sink: S, opts: ForwardOptions) -> Self {
        let now = Instant::now();
        let rate = opts.pacing.replay_events_per_second.max(1);
        let burst = (rate / 10).max(opts.pacing.batch_events as u32).max(1);
        Self {
            backoff: Backoff::new(opts.backoff_base, opts.backoff_cap),
            bucket: TokenBucket::new(rate, burst, now),
            queue,
            sink,
            opts,
            stats: Arc::new(ForwardStats::default()),
            failing_since: None,
            down_reported: false,
            hold_until: None,
            last_error: String::new(),
            metrics: None,
            beat: None,
            cursor: [None, None],
            pending_ack: None,
            requeues_seen: 0,
            outstanding: 0,
            careful: false,
        }
    }

    /// Reports deliveries, failures and dead letters to `metrics`, and beats `beat` on every
    /// turn of the loop (so its silence must cover the backoff cap plus a send timeout).
    #[must_use]
    pub fn with_health(mut self, metrics: SinkMetrics, beat: Heartbeat) -> Self {
        self.metrics = Some(metrics);
        self.beat = Some(beat);
        self
    }

    /// The live counters (shared; keep a clone before `run` consumes the forwarder).
    pub fn stats(&self) -> Arc<ForwardStats> {
        self.stats.clone()
    }

    /// Holds telemetry for a random delay up to the replay jitter when a backlog waits
    /// (start-up after an outage of the whole gateway).
    fn jitter_hold(&mut self) {
        if self.opts.pacing.replay_jitter.is_zero() {
            return;
        }
        let depth = self.queue.stats().depth as usize;
        if depth > self.opts.pacing.batch_events {
            let delay = self.opts.pacing.replay_jitter.mul_f64(fastrand::f64());
            tracing::info!(
                backlog = depth,
                delay_ms = delay.as_millis() as u64,
                "replaying the backlog after a random delay; alerts go first meanwhile"
            );
            self.hold_until = Some(Instant::now() + delay);
        }
    }

    /// Forwards until `shutdown`; then keeps forwarding what is buffered for at most `grace`.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<ForwardCounters, QueueError> {
        let appended = self.queue.appended();
        self.jitter_hold();
        loop {
            let notified = appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(beat) = &self.beat {
                beat.beat();
            }
            if shutdown.is_cancelled() {
                if let Some(beat) = self.beat.take() {
                    beat.retire();
                }
                return self.drain(grace).await;
            }
            match self.round().await? {
                Ok(Round::Sent) => {}
                Ok(Round::Idle) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Ok(Round::Held(until)) => {
                    // New alerts wake it: they are not held.
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(until) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    let delay = self.on_failure(&e).await?;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// One round: alerts first, else paced telemetry. The outer `Result` is the queue's,
    /// the inner one the sink's.
    async fn round(&mut self) -> Result<Result<Round, SinkError>, QueueError> {
        let requeues = self.queue.stats_requeues();
        if requeues != self.requeues_seen {
            // Dead letters came back under their old seqs: read from the head again.
            self.requeues_seen = requeues;
            self.settle().await?;
        }
        let alerts =
            self.queue
                .peek_lane(Lane::Alerts, self.cursor[0], self.opts.pacing.batch_events)?;
        // Telemetry fills what alerts leave of the batch, within its pace: a steady trickle
        // of alerts then does not cost a round trip per alert while the backlog waits.
        let room = self.opts.pacing.batch_events - alerts.len();
        // Drained: this round takes all that may go now (the alerts did not fill it, and
        // telemetry gave fewer than it could or is held back).
        let (telemetry, drained) = match self.telemetry_allowance(room)? {
            Ok(n) if n > 0 => {
                let t = self.queue.peek_lane(Lane::Telemetry, self.cursor[1], n)?;
                let drained = t.len() < n;
                (t, drained)
            }
            Err(held) if alerts.is_empty() => return self.quiet(held).await,
            Ok(_) => (Vec::new(), false),
            Err(_) => (Vec::new(), true),
        };
        if alerts.is_empty() && telemetry.is_empty() {
            return self.quiet(Round::Idle).await;
        }
        self.bucket.take(telemetry.len() as u64, Instant::now());
        let last = [
            alerts.last().map(|e| e.seq),
            telemetry.last().map(|e| e.seq),
        ];
        let mut batch = alerts;
        batch.extend(telemetry);
        // Which events go is decided by priority; within the round they go in seq order.
        batch.sort_unstable_by_key(|e| e.seq);
        let before = self.outstanding;
        let known = if self.careful {
            None
        } else {
            match self.sink.push(&batch).await {
                Ok(pushed) => {
                    // In flight or confirmed: the next read starts behind this batch.
                    self.outstanding += batch.len();
                    self.advance(last);
                    self.confirmed(pushed).await?;
                    if drained {
                        // Nothing more to overlap with: wait for the confirmations now.
                        // Leaving messages in flight while the client is silent lets a
                        // broker without TCP_NODELAY hold its last PUBACKs for our delayed
                        // ACK (40 ms).
                        return self.quiet(Round::Sent).await;
                    }
                    return Ok(Ok(Round::Sent));
                }
                // Nothing of earlier pushes was in flight: the rejection is about this
                // batch, which is narrowed down here (a sink that does not pipeline).
                Err(mut e @ SinkError::Rejected { .. }) if before == 0 => {
                    match self.sink.flush().await {
                        Ok(p) => e.add_delivered(p.confirmed),
                        Err(f) => e.add_delivered(f.delivered().iter().copied()),
                    }
                    Some(Err(e))
                }
                Err(e) => return self.push_failed(e).await,
            }
        };
        let result = self.deliver_after(batch, known).await?;
        if result.is_ok() {
            self.careful = false;
            self.advance(last);
        } else {
            self.settle().await?;
        }
        Ok(result.map(|_| Round::Sent))
    }

    fn advance(&mut self, last: [Option<u64>; 2]) {
        for (cursor, last) in self.cursor.iter_mut().zip(last) {
            *cursor = last.or(*cursor);
        }
    }

    /// Acks what a push or flush confirmed.
    async fn confirmed(&mut self, pushed: Pushed) -> Result<(), QueueError> {
        if !pushed.confirmed.is_empty() {
            self.outstanding = self.outstanding.saturating_sub(pushed.confirmed.len());
            self.acked(&pushed.confirmed).await?;
            self.on_success();
        }
        if pushed.lost {
            // The sink gave up on earlier pushes: read from the head again.
            self.settle().await?;
        }
        Ok(())
    }

    /// What was confirmed is acked, the rest is read again. After a transient failure
    /// nothing is in flight; after a rejection the sink may still hold pushes, which
    /// `settle` waits for. A rejection is narrowed down by the next round, which sends the
    /// same events again and waits for each answer.
    async fn push_failed(&mut self, e: SinkError) -> Result<Result<Round, SinkError>, QueueError> {
        self.outstanding = match e {
            SinkError::Transient { .. } => 0,
            SinkError::Rejected { .. } => self.outstanding.saturating_sub(e.delivered().len()),
        };
        if !e.delivered().is_empty() {
            self.acked(e.delivered()).await?;
        }
        self.settle().await?;
        if matches!(e, SinkError::Rejected { .. }) {
            tracing::debug!(error = %e, "a pushed batch was rejected; sending it again to find the culprits");
            self.careful = true;
            return Ok(Ok(Round::Sent));
        }
        Ok(Err(e))
    }

    /// Nothing to send now: waits for what is still in flight before going quiet.
    async fn quiet(&mut self, round: Round) -> Result<Result<Round, SinkError>, QueueError> {
        if self.outstanding == 0 {
            return Ok(Ok(round));
        }
        match self.sink.flush().await {
            Ok(pushed) => {
                self.confirmed(pushed).await?;
                if self.outstanding > 0 {
                    tracing::warn!(
                        sink = self.sink.name(),
                        unconfirmed = self.outstanding,
                        "the sink flushed without confirming every event pushed; sending them again"
                    );
                    self.outstanding = 0;
                    self.settle().await?;
                    return Ok(Ok(Round::Sent));
                }
                Ok(Ok(round))
            }
            Err(e) => self.push_failed(e).await,
        }
    }

    /// How many telemetry events may go now (at most `room`), or why none: held back by
    /// the post-outage jitter or the rate (`Held`), or nothing waiting (`Idle`).
    fn telemetry_allowance(&mut self, room: usize) -> Result<Result<usize, Round>, QueueError> {
        if room == 0 {
            return Ok(Ok(0));
        }
        let now = Instant::now();
        let waiting = || self.queue.peek_lane(Lane::Telemetry, self.cursor[1], 1);
        if let Some(until) = self.hold_until {
            if until > now {
                return Ok(Err(if waiting()?.is_empty() {
                    Round::Idle
                } else {
                    Round::Held(until)
                }));
            }
            self.hold_until = None;
        }
        let tokens = self.bucket.available(now);
        if tokens == 0 {
            return Ok(Err(if waiting()?.is_empty() {
                Round::Idle
            } else {
                Round::Held(now + self.bucket.wait_for(1, now))
            }));
        }
        Ok(Ok((tokens as usize).min(room)))
    }

    /// Waits for what the sink has in flight and for the ack in flight, and forgets the
    /// cursors: the next read starts at the head of the queue.
    async fn settle(&mut self) -> Result<(), QueueError> {
        if self.outstanding > 0 {
            self.outstanding = 0;
            let confirmed = match self.sink.flush().await {
                Ok(pushed) => pushed.confirmed,
                Err(e) => {
                    tracing::debug!(error = %e, "flush before reading from the head failed");
                    e.delivered().to_vec()
                }
            };
            if !confirmed.is_empty() {
                self.acked(&confirmed).await?;
            }
        }
        if let Some(task) = self.pending_ack.take() {
            task.await.map_err(|_| QueueError::Closed)??;
        }
        self.cursor = [None, None];
        Ok(())
    }

    /// Delivers a batch, narrowing rejections down to the offending events. Returns how
    /// many were delivered, or the transient error that stopped it.
    async fn deliver(
        &mut self,
        batch: Vec<SecurityEvent>,
    ) -> Result<Result<usize, SinkError>, QueueError> {
        self.deliver_after(batch, None).await
    }

    /// `deliver`, where the sink's answer to the whole batch may already be known.
    async fn deliver_after(
        &mut self,
        batch: Vec<SecurityEvent>,
        mut first: Option<Result<(), SinkError>>,
    ) -> Result<Result<usize, SinkError>, QueueError> {
        let original = batch.len();
        let mut delivered_total = 0;
        // Events found by narrowing (rejected alone, not named by the receiver).
        let mut found: Vec<SecurityEvent> = Vec::new();
        let mut found_why: Option<(&'static str, String)> = None;
        let mut work = vec![batch];
        while let Some(part) = work.pop() {
            let result = match first.take() {
                Some(known) => known,
                None => self.sink.send(&part).await,
            };
            let delivered: Vec<u64> = match &result {
                Ok(()) => part.iter().map(|e| e.seq).collect(),
                Err(e) => e.delivered().to_vec(),
            };
            if !delivered.is_empty() {
                delivered_total += delivered.len();
                self.acked(&delivered).await?;
            }
            match result {
                Ok(()) => {}
                Err(e @ SinkError::Transient { .. }) => return Ok(Err(e)),
                Err(SinkError::Rejected {
                    sink,
                    reason,
                    culprits,
                    ..
                }) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(m) = &self.metrics {
                        m.failure(FailureKind::Rejected);
                    }
                    let rest: Vec<SecurityEvent> = part
                        .into_iter()
                        .filter(|e| !delivered.contains(&e.seq))
                        .collect();
                    let (named, rest): (Vec<_>, Vec<_>) =
                        rest.into_iter().partition(|e| culprits.contains(&e.seq));
                    if !named.is_empty() {
                        // The receiver said which: no need to narrow down.
                        self.dead_letter(sink, &reason, &named).await?;
                        work.push(rest);
                    } else if rest.len() == 1 {
                        found.extend(rest);
                        found_why.get_or_insert((sink, reason));
                    } else if !rest.is_empty() {
                        let mut first = rest;
                        let second = first.split_off(first.len() / 2);
                        work.push(second);
                        work.push(first);
                    }
                }
            }
        }
        if let Some((sink, reason)) = found_why {
            if found.len() == original && original >= SYSTEMIC_REJECTION && delivered_total == 0 {
                // Every event of a sizeable batch refused one by one: the receiver refuses
                // this gateway, not these events. Dead-lettering would empty the queue.
                let e = SinkError::transient(
                    sink,
                    format!(
                        "the receiver rejected each of the {original} events of a batch ({reason}); \
                         not dead-lettering a whole batch: check the receiver's configuration"
                    ),
                );
                tracing::error!(error = %e, "systemic rejection; events stay buffered");
                return Ok(Err(e));
            }
            self.dead_letter(sink, &reason, &found).await?;
        }
        self.on_success();
        Ok(Ok(delivered_total))
    }

    async fn acked(&mut self, seqs: &[u64]) -> Result<(), QueueError> {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .events
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.forwarded(seqs.len());
        }
        let now_ms = linesentry_event::Timestamp::now().as_micros() / 1000;
        self.stats
            .last_delivery_ms
            .store(u64::try_from(now_ms).unwrap_or(0), Ordering::Relaxed);
        // One ack commits while the next batch is read and sent; a second waits for it.
        // Delivered but not deleted would be sent again (at-least-once), so an ack failure
        // is the queue's problem and stops the forwarder.
        if let Some(task) = self.pending_ack.take() {
            task.await.map_err(|_| QueueError::Closed)??;
        }
        let queue = self.queue.clone();
        let seqs = seqs.to_vec();
        self.pending_ack = Some(tokio::spawn(
            async move { queue.ack(Ack::Seqs(seqs)).await },
        ));
        Ok(())
    }

    async fn dead_letter(
        &mut self,
        sink: &str,
        reason: &str,
        bad: &[SecurityEvent],
    ) -> Result<(), QueueError> {
        let items = bad.iter().map(|e| (e.seq, reason.to_owned())).collect();
        let report = self
            .own_event(EventType::ForwardDeadLettered)
            .data("sink", sink)
            .data("reason", reason)
            .data("count", bad.len())
            .data(
                "seqs",
                bad.iter().take(100).map(|e| e.seq).collect::<Vec<_>>(),
            )
            .data(
                "ids",
                bad.iter()
                    .take(100)
                    .map(|e| e.id.to_string())
                    .collect::<Vec<_>>(),
            )
            .data(
                "event_types",
                bad.iter()
                    .take(100)
                    .map(|e| e.event_type.clone())
                    .collect::<Vec<_>>(),
            );
        // A receiver refusing the reports themselves would otherwise get a new report for
        // every report it refuses, without end: the table and the log keep those.
        let only_reports = bad.iter().all(|e| e.event_type == "forward.dead_lettered");
        let report = (!only_reports).then_some(&report);
        let moved = self.queue.dead_letter(items, report).await?;
        self.stats.dead_lettered.fetch_add(moved, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.dead_lettered(moved as usize);
        }
        tracing::error!(sink, %reason, count = bad.len(), first_seq = bad[0].seq,
            "receiver rejected events; moved to the dead-letter table (`linesentry buffer dead-letters`)");
        Ok(())
    }

    fn own_event(&self, event_type: EventType) -> SecurityEvent {
        SecurityEvent::new(self.opts.gateway_id.clone(), event_type)
            .severity(self.opts.severities.severity_of(event_type))
            .context("source", "forward")
    }

    fn on_success(&mut self) {
        self.backoff.reset();
        if let Some(beat) = &self.beat {
            beat.recovered();
        }
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                sink = self.sink.name(),
                outage_ms = since.elapsed().as_millis() as u64,
                "upstream accepts events again"
            );
            self.down_reported = false;
            self.jitter_hold();
        }
    }

    /// Counts and logs a transient failure, raises `forward.upstream_down` once per outage,
    /// and returns how long to wait.
    async fn on_failure(&mut self, e: &SinkError) -> Result<Duration, QueueError> {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.failure(FailureKind::Transient);
        }
        if let Some(beat) = &self.beat {
            beat.degraded(format!("{}: {e}", self.sink.name()));
        }
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        self.last_error = e.to_string();
        let delay = self.backoff.next_delay();
        let depth = self.queue.stats().depth;
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, buffered = depth,
            attempt = self.backoff.attempts(), "batch not delivered; kept in the buffer");
        if !self.down_reported && now.duration_since(since) >= self.opts.pacing.upstream_down_after
        {
            self.down_reported = true;
            let event = self
                .own_event(EventType::ForwardUpstreamDown)
                .data("sink", self.sink.name())
                .data("last_error", self.last_error.clone())
                .data("down_for_ms", now.duration_since(since).as_millis() as u64)
                .data("buffered", depth);
            self.queue.append(&[event]).await?;
        }
        Ok(delay)
    }

    /// After shutdown: deliver what is left within `grace` (alerts first, no pacing).
    async fn drain(mut self, grace: Duration) -> Result<ForwardCounters, QueueError> {
        let deadline = Instant::now() + grace;
        self.settle().await?;
        loop {
            let mut batch =
                self.queue
                    .peek_lane(Lane::Alerts, None, self.opts.pacing.batch_events)?;
            if batch.is_empty() {
                batch =
                    self.queue
                        .peek_lane(Lane::Telemetry, None, self.opts.pacing.batch_events)?;
            }
            if batch.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.deliver(batch)).await {
                Ok(Ok(Ok(_))) => self.settle().await?,
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Err(_))) | Err(_) => break,
            }
        }
        self.settle().await?;
        let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), self.sink.close()).await;
        Ok(self.stats.snapshot())
    }
}
