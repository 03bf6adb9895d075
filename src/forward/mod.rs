//! Forwarding: where events leave. A [`Forwarder`] reads batches from the head of the
//! durable queue, hands them to a [`Sink`], and acknowledges them in the queue only after the
//! sink reports the receiver has them. A failing sink is retried with capped exponential
//! backoff and jitter; nothing is acknowledged that was not delivered.

mod console;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::buffer::{Ack, Queue, QueueError};
use crate::event::SecurityEvent;

pub use console::{ConsoleFormat, ConsoleSink};

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Worth retrying later (connection down, timeout, 5xx).
    #[error("{sink}: delivery failed, will retry: {reason}")]
    Transient { sink: &'static str, reason: String },
}

/// A receiver of event batches. `send` returns only when the receiver has the batch.
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    fn send(
        &mut self,
        batch: &[SecurityEvent],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send;
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay: uniform in [ceiling/2, ceiling], ceiling = min(cap, base * 2^attempt).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Counters a forwarder keeps, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardCounters {
    pub batches: u64,
    pub events: u64,
    pub failures: u64,
}

#[derive(Debug)]
pub struct Forwarder<S> {
    queue: Queue,
    sink: S,
    batch: usize,
    backoff: Backoff,
    counters: ForwardCounters,
}

impl<S: Sink> Forwarder<S> {
    pub fn new(queue: Queue, sink: S, batch: usize) -> Self {
        Self {
            queue,
            sink,
            batch: batch.max(1),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            counters: ForwardCounters::default(),
        }
    }

    /// Forwards until `shutdown`; then keeps forwarding what is buffered for at most `grace`.
    /// Returns the counters, or the queue error that stopped it.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<ForwardCounters, QueueError> {
        let appended = self.queue.appended();
        loop {
            let notified = appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.queue.peek(None, self.batch)?;
            if batch.is_empty() {
                if shutdown.is_cancelled() {
                    return Ok(self.counters);
                }
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            if shutdown.is_cancelled() {
                // Draining: one bounded attempt per batch, then stop; the rest stays buffered.
                return match tokio::time::timeout(grace, self.deliver(&batch)).await {
                    Ok(Ok(())) => Box::pin(self.drain(grace)).await,
                    _ => Ok(self.counters),
                };
            }
            match self.deliver(&batch).await {
                Ok(()) => self.backoff.reset(),
                Err(SinkError::Transient { sink, reason }) => {
                    self.counters.failures += 1;
                    let delay = self.backoff.next_delay();
                    tracing::warn!(sink, %reason, retry_in_ms = delay.as_millis() as u64, pending = batch.len(),
                        "batch not delivered; kept in the buffer");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// After shutdown: deliver what is left within `grace`, then stop.
    async fn drain(mut self, grace: Duration) -> Result<ForwardCounters, QueueError> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let batch = self.queue.peek(None, self.batch)?;
            if batch.is_empty() {
                return Ok(self.counters);
            }
            match tokio::time::timeout_at(deadline, self.deliver(&batch)).await {
                Ok(Ok(())) => {}
                _ => return Ok(self.counters),
            }
        }
    }

    async fn deliver(&mut self, batch: &[SecurityEvent]) -> Result<(), SinkError> {
        self.sink.send(batch).await?;
        let seqs = batch.iter().map(|e| e.seq).collect();
        if let Err(e) = self.queue.ack(Ack::Seqs(seqs)).await {
            // Delivered but not deleted: it will be sent again (at-least-once).
            tracing::error!(error = %e, "acknowledging a delivered batch failed");
        }
        self.counters.batches += 1;
        self.counters.events += batch.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
