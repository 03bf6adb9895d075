//! The agent's own health: a metrics registry, liveness heartbeats, a local HTTP endpoint
//! (`GET /healthz`, `GET /metrics`) and systemd notification with a watchdog.
//!
//! - [`Metrics`]: per-station and per-sink counters behind cheap handles (atomics, no lock
//!   after registration), plus the queue's figures read from the [`Queue`] at each scrape;
//!   rendered in the Prometheus text format 0.0.4, every name prefixed `linesentry_`.
//! - [`Liveness`]: components register a [`Heartbeat`] and beat; [`Liveness::check`] says
//!   whether any is stalled or store commits fail (see [`liveness`] for the rules).
//! - [`serve`] / [`Server`]: the endpoint, loopback plain HTTP by default, TLS and a bearer
//!   token required elsewhere (`[health]` in the configuration, [`HealthSettings`]).
//! - [`notify`]: `READY=1`, `STOPPING=1`, and `WATCHDOG=1` only while healthy.
//!
//! # Wiring
//!
//! In the agent's start-up, once the queue is open (`queue`), with the validated `[health]`
//! settings, the stations and the shutdown token:
//!
//! ```no_run
//! # async fn wire(
//! #     settings: linesentry_agent::health::HealthSettings,
//! #     stations: Vec<linesentry_agent::source::StationConfig>,
//! #     queue: linesentry_agent::buffer::Queue,
//! #     shutdown: tokio_util::sync::CancellationToken,
//! # ) -> Result<(), linesentry_agent::health::HealthError> {
//! use std::time::Instant;
//! use linesentry_agent::health::{notify, FailureKind, Liveness, Metrics, Server};
//!
//! let metrics = Metrics::new();
//! let liveness = Liveness::new(settings.stall_after);
//! metrics.observe_queue(&queue);
//! liveness.observe_queue(&queue);
//!
//! // Bind before reporting ready, so a taken port or a bad certificate stops the start-up.
//! if settings.enabled {
//!     let server = Server::bind(&settings).await?;
//!     tokio::spawn(server.run(metrics.clone(), liveness.clone(), shutdown.clone()));
//! }
//!
//! // Each station task: a handle and a heartbeat; the allowed silence must cover a poll
//! // interval plus its timeout.
//! for station in stations.iter().filter(|s| s.enabled) {
//!     let counters = metrics.station(&station.id);
//!     let silence = liveness
//!         .default_silence()
//!         .max(2 * station.poll_interval + station.timeout);
//!     let beat = liveness.register(&format!("station/{}", station.id), silence);
//!     // In the poll loop, after the append:
//!     let started = Instant::now();
//!     // let poll = source.poll().await; let events = rules.observe(&poll, now);
//!     counters.record_poll(started.elapsed(), /* errors */ 0, /* readings */ 0, /* events */ 0);
//!     beat.beat();
//!     // Events given up (`dropped_unconfirmed` in agent::run_station):
//!     counters.dropped_unconfirmed(0);
//!     // When the task ends on shutdown (not on a panic: then it should go silent):
//!     beat.retire();
//! }
//!
//! // Each forwarder: beat every loop turn (including while backing off, so the silence
//! // must exceed the backoff cap plus a send timeout) and count deliveries.
//! let sink = metrics.sink("mqtt");
//! let beat = liveness.register("forward/mqtt", liveness.default_silence());
//! sink.forwarded(100); // a delivered batch of 100 events
//! sink.failure(FailureKind::Transient); // or Rejected
//! sink.reconnect();
//! sink.dead_lettered(1);
//! beat.degraded("broker unreachable"); // listed in /healthz, does not fail it
//! beat.recovered();
//! beat.beat();
//!
//! // systemd: ready once polling runs, the watchdog while healthy, stopping on shutdown.
//! let notifier = notify::Notifier::from_env();
//! if let Err(e) = notifier.ready("running") {
//!     tracing::warn!(error = %e, "cannot notify systemd");
//! }
//! if let Some(interval) = notify::watchdog_interval() {
//!     tokio::spawn(notify::watchdog(notifier.clone(), interval, liveness.clone(), shutdown.clone()));
//! }
//! shutdown.cancelled().await;
//! let _ = notifier.stopping("draining");
//! # Ok(())
//! # }
//! ```
//!
//! [`Queue`]: crate::buffer::Queue

mod exposition;
pub mod liveness;
mod metrics;
pub mod notify;
mod server;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use linesentry_common::Secret;
pub use liveness::{Health, Heartbeat, Liveness};
pub use metrics::{FailureKind, Metrics, SinkMetrics, StationMetrics, MAX_SINKS, MAX_STATIONS};
pub use server::{serve, Server, ServerLimits};

/// The validated `[health]` section (`config` builds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// `false`: no endpoint is served (the notify watchdog still uses liveness).
    pub enabled: bool,
    /// Loopback unless `tls` and `token` are both set (checked by validation).
    pub listen: SocketAddr,
    pub tls: Option<HealthTls>,
    /// Required as `Authorization: Bearer <token>` on every request when set.
    pub token: Option<Secret>,
    /// The default maximum silence of a component registered with liveness.
    pub stall_after: Duration,
}

/// The endpoint's own certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Whether the endpoint is served when `[health]` does not say.
pub const DEFAULT_ENABLED: bool = true;
/// Plain HTTP is accepted on loopback only; anything else needs TLS and a token.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));
/// The default maximum silence of a component before health turns not ok.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(30);

impl Default for HealthSettings {
    /// What a configuration without `[health]` gets: plain HTTP on 127.0.0.1:9464.
    fn default() -> Self {
        Self {
            enabled: DEFAULT_ENABLED,
            listen: DEFAULT_LISTEN,
            tls: None,
            token: None,
            stall_after: DEFAULT_STALL_AFTER,
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    #[error("health endpoint: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("health endpoint TLS: {}: {reason}", path.display())]
    Tls { path: PathBuf, reason: String },
    #[error(
        "health endpoint: refusing to serve on {addr} without TLS and a bearer token; \
         only a loopback address may use plain HTTP"
    )]
    Unprotected { addr: SocketAddr },
}
