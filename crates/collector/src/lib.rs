//! The central collector: where the events that gateways forward land, are checked, stored
//! in PostgreSQL, queried, watched live and alerted on. It shares only [`linesentry_event`]
//! with the agent: the event model, the hash chain and the signed batch envelope.
//!
//! The data flow, one module per stage:
//!
//! ```text
//! mqtt (rumqttc, QoS 1, manual PUBACK) ─┐
//!                                       ├─> ingest: decode ─> verify (registry keys)
//! http::ingest (HTTPS, gzip, tokens) ───┘        │
//!                                                v
//!          store::commit: chain (verdicts) + unnest insert + rollups + alerts (handlers)
//!                                                │  one transaction, then PUBACK / 2xx
//!                           ┌────────────────────┼─────────────────────┐
//!                           v                    v                     v
//!                stream (WebSocket hub)   webhooks (outbox)   http::api (queries, stats)
//! ```
//!
//! [`maintenance`] keeps month partitions, retention and the seq-gap sweeper; [`auth`] the
//! API tokens and roles; `db::create_database` makes the databases of the demo, the
//! benchmark and the tests on a private PostgreSQL (`linesentry_common::local`). Below them all: [`rows`], the events row model that
//! store, alerts and the readers share, and [`tls`], the PEM and rustls helpers of HTTPS,
//! MQTT and the database connection.

pub mod alerts;
pub mod assets;
pub mod auth;
pub mod chain;
pub mod config;
pub mod db;
pub mod decode;
pub mod describe;
pub mod http;
pub mod ingest;
pub mod maintenance;
pub mod migrate;
pub mod mqtt;
pub mod query;
pub mod registry;
pub mod rows;
pub mod siem;
pub mod store;
pub mod stream;
pub mod tls;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::alerts::AlertContext;
use self::auth::Tokens;
use self::config::Settings;
use self::db::{DbError, Pool};
use self::ingest::{Counters, Ingest, WorkerContext};
use self::maintenance::{Housekeeping, Partitions};
use self::registry::Registry;
use self::rows::local_event;
use self::stream::Hub;
use linesentry_event::{EventType, SecurityEvent, Severity};

pub use config::{load, ConfigErrors};

/// Why the collector did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    #[error("HTTP: {0}")]
    Http(String),
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    ingest: Ingest,
    hub: Hub,
    pool: Pool,
    /// The MQTT ingest holds both its subscriptions on a live connection.
    mqtt_subscribed: Arc<AtomicBool>,
}

impl Collector {
    /// Connects, migrates, and starts ingest (HTTPS, MQTT if configured), the API, the
    /// stream, the handlers and the housekeeping.
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        let settings = Arc::new(settings);
        let pool = Pool::new(&settings.database)?;
        migrate::migrate(&pool).await?;
        let partitions = Partitions::default();
        let hub = Hub::new(settings.stream.client_queue, settings.stream.max_clients);
        let alerts = Arc::new(AlertContext {
            collector_id: settings.collector_id.clone(),
            rules: settings.alerts.rules.clone(),
            webhooks: settings.alerts.webhooks.clone(),
            siem: settings
                .siem
                .iter()
                .map(|d| (d.name.clone(), d.filter.clone()))
                .collect(),
        });
        let webhooks = Arc::new(Notify::new());
        let housekeeping = Housekeeping {
            pool: pool.clone(),
            partitions: partitions.clone(),
            retention: settings.retention,
            gap_after: settings.ingest.gap_after,
            collector_id: settings.collector_id.clone(),
            alerts: Arc::clone(&alerts),
            hub: hub.clone(),
            webhooks: Arc::clone(&webhooks),
        };
        housekeeping.prepare_partitions().await?;
        let registry = Registry::new(pool.clone());
        let ctx = WorkerContext {
            pool: pool.clone(),
            registry: registry.clone(),
            hub: hub.clone(),
            alerts: Arc::clone(&alerts),
            collector_id: settings.collector_id.clone(),
            limits: settings.ingest.limits,
            transaction_events: settings.ingest.transaction_events,
            counters: Arc::new(Counters::default()),
            webhooks: Arc::clone(&webhooks),
            partitions,
        };
        let (ingest, workers) =
            Ingest::start(&ctx, settings.ingest.workers, settings.ingest.worker_queue);
        let shutdown = CancellationToken::new();
        let state = http::AppState {
            pool: pool.clone(),
            ingest: ingest.clone(),
            registry,
            tokens: Tokens::new(pool.clone()),
            hub: hub.clone(),
            settings: Arc::clone(&settings),
            shutdown: shutdown.clone(),
        };
        let (http_addr, http_task) = http::serve(state, settings.http.listen)
            .await
            .map_err(StartError::Http)?;
        let mut tasks = vec![http_task];
        let mqtt_subscribed = Arc::new(AtomicBool::new(false));
        if let Some(mqtt) = settings.mqtt.clone() {
            tasks.push(Self::spawn_mqtt(
                mqtt,
                &settings,
                &ingest,
                &pool,
                &mqtt_subscribed,
                &shutdown,
            ));
        }
        tasks.push(tokio::spawn(housekeeping.run(shutdown.clone())));
        tasks.push(tokio::spawn(webhook::run(
            pool.clone(),
            settings.alerts.webhooks.clone(),
            ingest.clone(),
            Arc::clone(&webhooks),
            shutdown.clone(),
        )));
        if !settings.siem.is_empty() {
            tasks.push(tokio::spawn(siem::run(
                pool.clone(),
                settings.siem.clone(),
                ingest.clone(),
                shutdown.clone(),
            )));
        }
        let started = started_event(&settings, http_addr);
        ingest.submit_local(vec![started]).await;
        tracing::info!(http = %http_addr, tls = settings.http.tls.is_some(), mqtt = settings.mqtt.is_some(), "collector started");
        Ok(Self {
            http_addr,
            shutdown,
            tasks,
            workers,
            ingest,
            hub,
            pool,
            mqtt_subscribed,
        })
    }

    fn spawn_mqtt(
        mqtt: config::MqttSettings,
        settings: &Settings,
        ingest: &Ingest,
        pool: &Pool,
        subscribed: &Arc<AtomicBool>,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        let (ingest, pool, id, subscribed, stop) = (
            ingest.clone(),
            pool.clone(),
            settings.collector_id.clone(),
            Arc::clone(subscribed),
            shutdown.clone(),
        );
        let max = settings.ingest.limits.max_bytes;
        tokio::spawn(async move {
            if let Err(e) = mqtt::run(mqtt, max, ingest, pool, id, subscribed, stop).await {
                tracing::error!(error = %e, "MQTT ingest stopped");
            }
        })
    }

    /// The MQTT ingest is connected and the broker granted its subscriptions (false
    /// without MQTT).
    pub fn mqtt_subscribed(&self) -> bool {
        self.mqtt_subscribed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Where the HTTP(S) listener is bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Every ingest worker and the HTTP server still run (what the systemd watchdog checks).
    pub fn is_alive(&self) -> bool {
        self.workers.iter().all(|w| !w.is_finished())
            && self.tasks.first().is_some_and(|http| !http.is_finished())
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.ingest.counters)
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stops intake (HTTP, MQTT), lets the workers commit what they hold, and returns.
    /// Messages not committed stay unacknowledged with the broker.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        drop(self.ingest);
        for w in self.workers {
            if tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .is_err()
            {
                tracing::error!("an ingest worker did not finish within 10 s; its uncommitted jobs are left to the broker and the clients to send again");
            }
        }
    }

    /// Stops everything at once, as a crash would: nothing in flight is committed or
    /// acknowledged. For tests of what survives a crash.
    pub fn abort(self) {
        self.shutdown.cancel();
        for t in self.tasks.into_iter().chain(self.workers) {
            t.abort();
        }
    }
}

/// `collector.started`: the version and the listening addresses, for the audit trail.
fn started_event(settings: &Settings, http_addr: SocketAddr) -> SecurityEvent {
    local_event(
        &settings.collector_id,
        EventType::CollectorStarted,
        Severity::Info,
    )
    .data("version", env!("CARGO_PKG_VERSION"))
    .data("http", http_addr.to_string())
    .data(
        "mqtt",
        settings
            .mqtt
            .as_ref()
            .map(|m| format!("{}:{}", m.host, m.port)),
    )
}
