//! Sink combinators: a primary with a fallback, or both at once.

use std::time::Duration;

use tokio::time::Instant;

use super::{SendFuture, Sink, SinkError};
use crate::event::SecurityEvent;

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
                    let since = *self.failing_since.get_or_insert(now);
                    if now.duration_since(since) < self.after {
                        return Err(e);
                    }
                    tracing::warn!(primary = self.primary.name(), secondary = self.secondary.name(),
                        error = %e, "primary sink down; using the fallback");
                    // What the primary confirmed is not sent again.
                    let delivered = e.delivered().to_vec();
                    let rest: Vec<SecurityEvent> = batch
                        .iter()
                        .filter(|ev| !delivered.contains(&ev.seq))
                        .cloned()
                        .collect();
                    match self.secondary.send(&rest).await {
                        Ok(()) => Ok(()),
                        Err(mut e2) => {
                            match &mut e2 {
                                SinkError::Transient { delivered: d, .. }
                                | SinkError::Rejected { delivered: d, .. } => {
                                    d.extend(delivered);
                                }
                            }
                            Err(e2)
                        }
                    }
                }
            }
        })
    }

    fn close(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.primary.close().await;
            self.secondary.close().await;
        })
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
