//! Forwarding: where events leave.
//!
//! A [`Forwarder`] reads batches from the head of the durable queue, hands them to a
//! [`Sink`], and acknowledges events in the queue only once the sink reports that the
//! receiver has them (MQTT PUBACK, HTTP 2xx). The queue stays the source of truth: a sink
//! keeps no events of its own, so whatever a broken connection lost is simply read again.
//!
//! - **Order and priority**: warn-or-higher events (the queue's alerts lane) go first; the
//!   telemetry backlog drains oldest first behind them at `replay_events_per_second`, and
//!   after an outage only after a random delay up to `replay_jitter`, so hundreds of
//!   gateways coming back together do not flood the receiver at once.
//! - **Failures**: a transient failure (connection down, timeout, 5xx) keeps the batch and
//!   retries with capped exponential backoff and jitter; what the receiver did confirm before
//!   the failure is acknowledged. A rejection (4xx, too large) is narrowed down by splitting
//!   the batch until the offending events are found; only those move to the store's
//!   dead-letter table, with a `forward.dead_lettered` event, and the rest go on.
//! - **Outage**: nothing accepted for `upstream_down_after` while events wait raises one
//!   `forward.upstream_down` per outage.
//! - **Routing**: [`route::Fallback`] (primary, secondary while the primary fails) and
//!   [`route::Both`] combine sinks.
//!
//! Tamper evidence travels with every batch: events carry their `prev_hash` link (set by
//! the queue) and sinks seal each message or request with the gateway's Ed25519 key
//! ([`linesentry_event::integrity::BatchSigner`], key file from [`identity`]).
//!
//! Settings: [`ForwardSettings`] (`[forward]`) with [`mqtt::MqttSettings`],
//! [`https::HttpsSettings`] and their [`tls::TlsSettings`]; `config` validates and builds them.

mod console;
mod engine;
pub mod https;
pub mod identity;
pub mod mqtt;
mod pacing;
pub mod route;
pub mod tls;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

use linesentry_event::SecurityEvent;

pub use console::{ConsoleFormat, ConsoleSink};
pub use engine::{
    ForwardCounters, ForwardOptions, ForwardStats, Forwarder, Pacing, DEFAULT_BATCH_EVENTS,
    DEFAULT_REPLAY_EVENTS_PER_SECOND, DEFAULT_REPLAY_JITTER, DEFAULT_UPSTREAM_DOWN_AFTER,
};
pub use pacing::TokenBucket;

use https::HttpsSettings;
use mqtt::MqttSettings;

/// The validated `[forward]` section: which sinks, how they are combined, and the
/// forwarder's [`Pacing`].
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardSettings {
    /// Print forwarded events as JSON lines on stdout.
    pub console: bool,
    pub mqtt: Option<MqttSettings>,
    pub https: Option<HttpsSettings>,
    /// Which of the configured sinks receive events, and in which order.
    pub strategy: Strategy,
    pub fallback_after: Duration,
    pub pacing: Pacing,
}

/// How events are routed when MQTT and HTTPS are both configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Mqtt,
    Https,
    /// MQTT; HTTPS while the broker has failed for `fallback_after`.
    MqttThenHttps,
    HttpsThenMqtt,
    /// Both; an event counts as delivered once both acknowledged it.
    Both,
}

/// Why a batch was not (completely) delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Worth retrying later (connection down, timeout, 5xx). `delivered` lists the seqs the
    /// receiver did confirm before the failure.
    #[error("{sink}: delivery failed, will retry: {reason}")]
    Transient {
        sink: &'static str,
        reason: String,
        delivered: Vec<u64>,
    },
    /// The receiver refuses events of this batch and would refuse them again. `culprits`
    /// names them when the sink knows which (else the forwarder splits the batch to find
    /// them); `delivered` lists what was confirmed anyway.
    #[error("{sink}: receiver rejected the batch: {reason}")]
    Rejected {
        sink: &'static str,
        reason: String,
        culprits: Vec<u64>,
        delivered: Vec<u64>,
    },
}

impl SinkError {
    pub fn transient(sink: &'static str, reason: impl Into<String>) -> Self {
        SinkError::Transient {
            sink,
            reason: reason.into(),
            delivered: Vec::new(),
        }
    }

    pub fn rejected(sink: &'static str, reason: impl Into<String>) -> Self {
        SinkError::Rejected {
            sink,
            reason: reason.into(),
            culprits: Vec::new(),
            delivered: Vec::new(),
        }
    }

    /// Adds seqs the receiver confirmed before the error.
    pub fn add_delivered(&mut self, seqs: impl IntoIterator<Item = u64>) {
        match self {
            SinkError::Transient { delivered, .. } | SinkError::Rejected { delivered, .. } => {
                delivered.extend(seqs);
            }
        }
    }

    /// Seqs confirmed despite the error.
    pub fn delivered(&self) -> &[u64] {
        match self {
            SinkError::Transient { delivered, .. } | SinkError::Rejected { delivered, .. } => {
                delivered
            }
        }
    }
}

/// What `Sink::send` returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// What a pipelined `Sink::push` or `Sink::flush` achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Seqs the receiver confirmed during the call, of this batch or of earlier pushes.
    pub confirmed: Vec<u64>,
    /// Events pushed earlier and not confirmed will never be: the sink gave up on them
    /// without an error (a fallback took over). The forwarder reads them again.
    pub lost: bool,
}

/// What `Sink::push` and `Sink::flush` return. After a transient error nothing is in
/// flight any more: what was not confirmed (`SinkError::delivered`) is read from the queue
/// again. After a rejection the forwarder flushes, then sends the events again with `send`
/// to find the culprits.
pub type PushFuture<'a> = Pin<Box<dyn Future<Output = Result<Pushed, SinkError>> + Send + 'a>>;

/// A receiver of event batches. `send` resolves only when the receiver has confirmed every
/// event of the batch, or with the error that says what it has and what it refused. Not
/// cancel-safe in general: a cancelled send may have delivered events it never reported,
/// which are then sent again (at-least-once; receivers de-duplicate by event id).
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a>;
    /// Pipelined delivery: hands `batch` to the receiver and may return before every
    /// confirmation is in; later `push` or `flush` calls report the rest. A round trip
    /// then overlaps with reading and encoding the next batch instead of following it.
    /// The default waits for the whole batch, like `send`.
    fn push<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> PushFuture<'a> {
        Box::pin(async move {
            self.send(batch).await?;
            Ok(Pushed {
                confirmed: batch.iter().map(|e| e.seq).collect(),
                lost: false,
            })
        })
    }
    /// Waits until nothing pushed is still unconfirmed.
    fn flush(&mut self) -> PushFuture<'_> {
        Box::pin(async { Ok(Pushed::default()) })
    }
    /// Called when the forwarder stops, to say goodbye (e.g. the MQTT offline status).
    fn close(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

impl Sink for Box<dyn Sink> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        (**self).send(batch)
    }

    fn push<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> PushFuture<'a> {
        (**self).push(batch)
    }

    fn flush(&mut self) -> PushFuture<'_> {
        (**self).flush()
    }

    fn close(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        (**self).close()
    }
}

#[cfg(test)]
mod tests;
