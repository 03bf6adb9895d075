//! Sink combinators: a primary with a fallback, or both at once.

use std::time::Duration;

use tokio::time::Instant;

use super::{PushFuture, Pushed, SendFuture, Sink, SinkError};
use linesentry_event::SecurityEvent;

/// Sends to `primary`; once it has failed continuously for `after`, sends to `secondary`
/// instead, trying the primary again every `retry_primary`.
#[derive(Debug)]
pub struct Fallback<P, S> {
    primary: P,
    secondary: S,
    after: Duration,
    retry_primary: Duration,
    failing_since: Option<Instant>,
    last_primary_try: Option<Instant>,
    /// Which sink the last push went to (what a flush waits for).
    pushed_to_secondary: bool,
}

impl<P: Sink, S: Sink> Fallback<P, S> {
    pub fn new(primary: P, secondary: S, after: Duration) -> Self {
        Self {
            primary,
            secondary,
            after,
            retry_primary: Duration::from_secs(30),
            failing_since: None,
            last_primary_try: None,
            pushed_to_secondary: false,
        }
    }

    fn use_secondary(&self, now: Instant) -> bool {
        let Some(since) = self.failing_since else {
            return false;
        };
        let failed_long = now.duration_since(since) >= self.after;
        let retry_due = self
            .last_primary_try
            .is_none_or(|t| now.duration_since(t) >= self.retry_primary);
        failed_long && !retry_due
    }

    /// The primary failed transiently: has it failed long enough to use the secondary?
    fn switch_now(&mut self, e: &SinkError, now: Instant) -> bool {
        let since = *self.failing_since.get_or_insert(now);
        if now.duration_since(since) < self.after {
            return false;
        }
        tracing::warn!(primary = self.primary.name(), secondary = self.secondary.name(),
            error = %e, "primary sink down; using the fallback");
        true
    }
}

/// The events of `batch` not among `delivered`.
fn undelivered(batch: &[SecurityEvent], delivered: &[u64]) -> Vec<SecurityEvent> {
    batch
        .iter()
        .filter(|ev| !delivered.contains(&ev.seq))
        .cloned()
        .collect()
}

impl<P: Sink, S: Sink> Sink for Fallback<P, S> {
    fn name(&self) -> &'static str {
        "fallback"
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let now = Instant::now();
            if self.use_secondary(now) {
                return self.secondary.send(batch).await;
            }
            self.last_primary_try = Some(now);
            match self.primary.send(batch).await {
                Ok(()) => {
                    if self.failing_since.take().is_some() {
                        tracing::info!(primary = self.primary.name(), "primary sink is back");
                    }
                    Ok(())
                }
                Err(e @ SinkError::Rejected { .. }) => Err(e),
                Err(e) => {
                    if !self.switch_now(&e, now) {
                        return Err(e);
                    }
                    // What the primary confirmed is not sent again.
                    let delivered = e.delivered().to_vec();
                    let rest = undelivered(batch, &delivered);
                    match self.secondary.send(&rest).await {
                        Ok(()) => Ok(()),
                        Err(mut e2) => {
                            e2.add_delivered(delivered);
                            Err(e2)
                        }
                    }
                }
            }
        })
    }

    /// Pipelined like the sink in use. Leaving one sink for the other waits for what the
    /// one left still has in flight; when the primary fails for good within a push, the
    /// batch goes to the secondary at once and the primary's unconfirmed pushes are
    /// reported lost, so the forwarder reads them again.
    fn push<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> PushFuture<'a> {
        Box::pin(async move {
            let now = Instant::now();
            let to_secondary = self.use_secondary(now);
            let mut earlier = Pushed::default();
            if to_secondary != self.pushed_to_secondary {
                let left = if self.pushed_to_secondary {
                    self.secondary.flush().await
                } else {
                    self.primary.flush().await
                };
                match left {
                    Ok(p) => earlier = p,
                    Err(e) => {
                        earlier.confirmed = e.delivered().to_vec();
                        earlier.lost = true;
                    }
                }
                self.pushed_to_secondary = to_secondary;
            }
            if to_secondary {
                return merge(self.secondary.push(batch).await, earlier);
            }
            self.last_primary_try = Some(now);
            match self.primary.push(batch).await {
                Ok(p) => {
                    if !p.confirmed.is_empty() && self.failing_since.take().is_some() {
                        tracing::info!(primary = self.primary.name(), "primary sink is back");
                    }
                    merge(Ok(p), earlier)
                }
                Err(e @ SinkError::Rejected { .. }) => merge(Err(e), earlier),
                Err(e) => {
                    if !self.switch_now(&e, now) {
                        return merge(Err(e), earlier);
                    }
                    let delivered = e.delivered().to_vec();
                    let rest = undelivered(batch, &delivered);
                    earlier.confirmed.extend(delivered);
                    earlier.lost = true;
                    self.pushed_to_secondary = true;
                    merge(self.secondary.push(&rest).await, earlier)
                }
            }
        })
    }

    fn flush(&mut self) -> PushFuture<'_> {
        Box::pin(async move {
            if self.pushed_to_secondary {
                return self.secondary.flush().await;
            }
            let r = self.primary.flush().await;
            if matches!(r, Err(SinkError::Transient { .. })) {
                self.failing_since.get_or_insert_with(Instant::now);
            }
            r
        })
    }

    fn close(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.primary.close().await;
            self.secondary.close().await;
        })
    }
}

/// Adds what an earlier step confirmed (and whether it lost events) to a push's result.
fn merge(result: Result<Pushed, SinkError>, earlier: Pushed) -> Result<Pushed, SinkError> {
    match result {
        Ok(mut p) => {
            p.confirmed.extend(earlier.confirmed);
            p.lost |= earlier.lost;
            Ok(p)
        }
        Err(mut e) => {
            e.add_delivered(earlier.confirmed);
            Err(e)
        }
    }
}

/// Sends every batch to both sinks; a batch counts as delivered once both confirmed it.
/// A failure of either is retried for the whole batch (the other gets duplicates, which
/// receivers drop by event id).
#[derive(Debug)]
pub struct Both<A, B> {
    a: A,
    b: B,
}

impl<A: Sink, B: Sink> Both<A, B> {
    pub fn new(a: A, b: B) -> Self {
        Self { a, b }
    }
}

impl<A: Sink, B: Sink> Sink for Both<A, B> {
    fn name(&self) -> &'static str {
        "both"
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let (ra, rb) = tokio::join!(self.a.send(batch), self.b.send(batch));
            let errors: Vec<SinkError> = [ra.err(), rb.err()].into_iter().flatten().collect();
            // A rejection by either is a rejection: the forwarder narrows it down.
            let chosen = errors
                .iter()
                .position(|e| matches!(e, SinkError::Rejected { .. }))
                .unwrap_or(0);
            match errors.into_iter().nth(chosen) {
                None => Ok(()),
                Some(e) => Err(strip_delivered(e)),
            }
        })
    }

    fn close(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.a.close().await;
            self.b.close().await;
        })
    }
}

/// One sink's confirmation is not enough for `Both`.
fn strip_delivered(mut e: SinkError) -> SinkError {
    match &mut e {
        SinkError::Transient { delivered, .. } | SinkError::Rejected { delivered, .. } => {
            delivered.clear();
        }
    }
    e
}
