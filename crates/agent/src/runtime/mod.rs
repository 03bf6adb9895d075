//! The agent: wires source -> rules -> buffer -> forward for every configured station and
//! runs until shut down.
//!
//! One task per station polls its source, runs that station's rules and appends the events;
//! stations share nothing but the queue, so one slow station never delays another. Polling
//! does not wait for commits: a station's info-level appends may wait up to
//! `buffer.routine_commit_ms` to share a commit (see `outbox` and `buffer::writer`), while
//! the station polls on. Shutdown order: stop polling, let every station commit what it
//! has in flight at once, record `agent.stopped`, give forwarders a bounded grace period,
//! then commit and close the queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::buffer::{Confirmation, OpenError, Queue, QueueError};
use crate::config::Config;
use crate::forward::identity::{Identity, IdentityError};
use crate::forward::mqtt::{GatewayInfo, MqttSink};
use crate::forward::route::{Both, Fallback};
use crate::forward::Strategy;
use crate::forward::{
    ConsoleFormat, ConsoleSink, ForwardCounters, ForwardOptions, Forwarder, Sink,
};
use crate::health::{notify, Heartbeat, Liveness, Metrics, Server, StationMetrics};
use crate::rules::{Baseline, RuleTag, RuleTags, StationRules};
use crate::source::{Profile, StationConfig};
use crate::source::{Source, SourceError};
use linesentry_event::integrity::BatchSigner;
use linesentry_event::{EventType, Timestamp};
use linesentry_event::{SecurityEvent, SeverityMap};

/// Events a station keeps in memory while the queue refuses appends, at most.
const STATION_PENDING_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("cannot open the buffer: {0}")]
    Open(#[from] OpenError),
    #[error("buffer error: {0}")]
    Queue(#[from] QueueError),
    #[error("station `{station}`: {reason}")]
    Source {
        station: String,
        reason: SourceError,
    },
    #[error(
        "forwarding to {0} is not available in this build; remove [forward.{0}] or use console"
    )]
    UnsupportedSink(&'static str),
    #[error("gateway identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("[forward.{sink}]: {reason}")]
    Sink { sink: &'static str, reason: String },
}

mod outbox;
mod stations;

use outbox::Outbox;
use stations::{build_sources, Shared, Stations};

/// Choices the command line makes on top of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Notified (on SIGHUP) to reload the configuration from its file.
    pub reload: Option<Arc<tokio::sync::Notify>>,
    /// Overrides `forward.console`: print forwarded events in this format.
    pub console: Option<ConsoleFormat>,
}

/// What a run did, for the final log line and the demo's summary.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub stations: usize,
    pub readings: u64,
    pub events: u64,
    pub forwarded: ForwardCounters,
    pub buffered: u64,
    pub dropped_unconfirmed: u64,
    /// Durable commits of the buffer during the run.
    pub commits: u64,
}

#[derive(Debug, Default)]
struct StationOutcome {
    readings: u64,
    events: u64,
    dropped_unconfirmed: u64,
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(
    mut config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunSummary, AgentError> {
    // Every source is built before anything starts, so a bad one stops the start-up.
    let sources = build_sources(&config, config.stations.iter().filter(|s| s.enabled))?;
    let metrics = Metrics::new();
    let sink = build_sink(&config, &options, &metrics)?;
    let (queue, report) = Queue::open(config.buffer.clone())?;
    tracing::info!(store = %queue.path().display(), depth = report.depth, next_seq = report.next_seq,
        "buffer open");
    let liveness = Liveness::new(config.health.stall_after);
    metrics.observe_queue(&queue);
    liveness.observe_queue(&queue);
    let health_stop = CancellationToken::new();
    let health = start_health(&config, &metrics, &liveness, &health_stop).await;
    let gateway: Arc<str> = Arc::from(config.agent.gateway_id.as_str());
    let severities = Arc::new(config.severity.clone());

    queue
        .append(&[lifecycle(&config, EventType::AgentStarted)
            .data("version", env!("CARGO_PKG_VERSION"))
            .data("stations", config.stations.len())
            .data("station_list", station_list(&config))
            .data("station_list_truncated", config.stations.len() > MAX_LISTED)
            .data("buffered_at_start", report.depth)])
        .await?;

    let polling = shutdown.child_token();
    let mut stations = Stations::new(
        Shared {
            gateway: gateway.clone(),
            queue: queue.clone(),
            metrics: metrics.clone(),
            liveness: liveness.clone(),
            polling: polling.clone(),
        },
        severities,
    );
    for (station, source) in sources {
        stations.start(station, source);
    }
    let count = stations.len();
    tracing::info!(stations = count, gateway = %gateway, "agent running");

    let forwarding = CancellationToken::new();
    let forwarder =
        sink.map(|sink| spawn_forwarder(sink, &config, &queue, (&metrics, &liveness), &forwarding));
    let notifier = notify_ready(count, &liveness, &health_stop);

    let reload = options.reload.clone().unwrap_or_default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = reload.notified() => {
                let _ = notifier.status("reloading the configuration");
                match crate::config::load(&config.path) {
                    Ok(new) => stations.reload(&mut config, new).await,
                    Err(errors) => tracing::error!(file = %config.path.display(), %errors,
                        "configuration reload refused; the running configuration stays"),
                }
                let _ = notifier.status(&format!("polling {} stations", stations.len()));
            }
        }
    }
    let _ = notifier.stopping("draining");
    tracing::info!("shutting down: stopping polls");
    polling.cancel();
    let outcome = stations.stop_all().await;
    let mut summary = RunSummary {
        stations: count,
        readings: outcome.readings,
        events: outcome.events,
        dropped_unconfirmed: outcome.dropped_unconfirmed,
        ..RunSummary::default()
    };
    queue
        .append(&[lifecycle(&config, EventType::AgentStopped)
            .data("readings", summary.readings)
            .data("events", summary.events)])
        .await?;
    forwarding.cancel();
    if let Some(task) = forwarder {
        match task.await {
            Ok(Ok(counters)) => summary.forwarded = counters,
            Ok(Err(e)) => tracing::error!(error = %e, "forwarder stopped on a buffer error"),
            Err(e) => tracing::error!(error = %e, "forwarder task failed"),
        }
    }
    let stats = queue.stats();
    summary.buffered = stats.depth;
    summary.commits = stats.commits;
    health_stop.cancel();
    if let Some(task) = health {
        let _ = task.await;
    }
    queue.close().await;
    tracing::info!(
        readings = summary.readings,
        events = summary.events,
        forwarded = summary.forwarded.events,
        buffered = summary.buffered,
        "agent stopped"
    );
    Ok(summary)
}

fn lifecycle(config: &Config, event_type: EventType) -> SecurityEvent {
    SecurityEvent::new(config.agent.gateway_id.as_str(), event_type)
        .severity(config.severity.severity_of(event_type))
        .data("config_digest", config.digest.clone())
        .context("source", "agent")
        .context("site", config.agent.site.clone())
}

/// Most stations `agent.started` lists (an event stays far below the 64 KiB limit).
const MAX_LISTED: usize = 100;

/// The stations of `agent.started`, for the collector's asset inventory: id, protocol and
/// where the agent reaches it (address, serial device or endpoint), whether it is polled.
fn station_list(config: &Config) -> serde_json::Value {
    use crate::source::SourceConfig;
    let clip = |s: String| s.chars().take(120).collect::<String>();
    config
        .stations
        .iter()
        .take(MAX_LISTED)
        .map(|s| {
            let address = match &s.source {
                SourceConfig::Simulated => None,
                SourceConfig::ModbusTcp { address, unit_id } => {
                    Some(format!("{address} unit {unit_id}"))
                }
                SourceConfig::ModbusRtu {
                    device, unit_id, ..
                } => Some(format!("{} unit {unit_id}", device.display())),
                SourceConfig::OpcUa { endpoint_url, .. } => Some(endpoint_url.clone()),
            };
            serde_json::json!({
                "id": clip(s.id.clone()),
                "protocol": s.source.kind(),
                "address": address.map(clip),
                "enabled": s.enabled,
            })
        })
        .collect()
}

/// A station's counters and heartbeat; its allowed silence covers a poll and its timeout.
fn station_health(
    station: &StationConfig,
    metrics: &Metrics,
    liveness: &Liveness,
) -> (StationMetrics, Heartbeat) {
    let silence = liveness
        .default_silence()
        .max(2 * station.poll_interval + station.timeout);
    (
        metrics.station(&station.id),
        liveness.register(&format!("station/{}", station.id), silence),
    )
}

/// Starts forwarding from `queue` to `sink`, reporting to the health registry.
fn spawn_forwarder(
    sink: Box<dyn Sink>,
    config: &Config,
    queue: &Queue,
    (metrics, liveness): (&Metrics, &Liveness),
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<ForwardCounters, QueueError>> {
    let name = sink.name();
    let options = forward_options(config);
    // A send may take a connect timeout and an ack timeout; a retry waits the backoff.
    let silence = liveness
        .default_silence()
        .max(options.backoff_cap + Duration::from_secs(30));
    let beat = liveness.register(&format!("forward/{name}"), silence);
    tokio::spawn(
        Forwarder::new(queue.clone(), sink, options)
            .with_health(metrics.sink(name), beat)
            .run(stop.clone(), config.agent.shutdown_grace),
    )
}

/// Tells systemd the agent is ready and keeps its watchdog fed while healthy (no-ops
/// without a notify socket).
fn notify_ready(
    stations: usize,
    liveness: &Liveness,
    stop: &CancellationToken,
) -> notify::Notifier {
    let notifier = notify::Notifier::from_env();
    if let Err(e) = notifier.ready(&format!("polling {stations} stations")) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    if let Some(interval) = notify::watchdog_interval() {
        tokio::spawn(notify::watchdog(
            notifier.clone(),
            interval,
            liveness.clone(),
            stop.clone(),
        ));
    }
    notifier
}

/// Starts the health endpoint. A port that is taken or a TLS file that is wrong is logged as
/// an error and the agent runs on without the endpoint: collecting events matters more than
/// reporting on it, and the systemd watchdog does not depend on the endpoint.
async fn start_health(
    config: &Config,
    metrics: &Metrics,
    liveness: &Liveness,
    stop: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.health.enabled {
        return None;
    }
    match Server::bind(&config.health).await {
        Ok(server) => {
            tracing::info!(listen = %server.local_addr(), "health endpoint: /healthz /metrics");
            Some(tokio::spawn(server.run(
                metrics.clone(),
                liveness.clone(),
                stop.clone(),
            )))
        }
        Err(e) => {
            // Two agents on one host collide on the default port: name the key that fixes it.
            tracing::error!(error = %e, listen = %config.health.listen,
                "health endpoint not started; the agent runs on without it (several agents on one host need a `[health] listen` port each)");
            None
        }
    }
}

/// Pacing and reporting of the forwarder, from the config.
pub fn forward_options(config: &Config) -> ForwardOptions {
    ForwardOptions {
        pacing: config.forward.pacing,
        severities: Arc::new(config.severity.clone()),
        ..ForwardOptions::new(config.agent.gateway_id.as_str())
    }
}

/// The gateway's batch signer, from its identity key (created on first start).
pub fn signer(config: &Config) -> Result<BatchSigner, AgentError> {
    let identity = Identity::load_or_create(&config.agent.data_dir)?;
    if identity.created {
        tracing::warn!(key_id = %identity.key_id(), public_key = %identity.public_key_base64(),
            "new gateway identity: register this public key with the collector");
    }
    Ok(BatchSigner::new(
        config.agent.gateway_id.as_str(),
        identity.key,
    ))
}

/// The sink the configuration asks for: MQTT and/or HTTPS by `forward.strategy`, plus the
/// console when asked (then an event counts as delivered once every sink has it). `None`
/// when nothing forwards: events stay buffered.
fn build_sink(
    config: &Config,
    options: &RunOptions,
    metrics: &Metrics,
) -> Result<Option<Box<dyn Sink>>, AgentError> {
    let console = options
        .console
        .or(config.forward.console.then_some(ConsoleFormat::Json))
        .map(|format| Box::new(ConsoleSink::new(format)) as Box<dyn Sink>);
    let f = &config.forward;
    let network: Option<Box<dyn Sink>> = if f.mqtt.is_none() && f.https.is_none() {
        None
    } else {
        let signer = signer(config)?;
        let mqtt = f
            .mqtt
            .clone()
            .map(|settings| {
                let info = GatewayInfo {
                    site: config.agent.site.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    config_digest: config.digest.clone(),
                };
                MqttSink::new(settings, signer.clone(), info)
                    .map(|s| Box::new(s.with_metrics(metrics.sink("mqtt"))) as Box<dyn Sink>)
                    .map_err(|e| AgentError::Sink {
                        sink: "mqtt",
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        let https = f
            .https
            .clone()
            .map(|settings| {
                crate::forward::https::HttpsSink::new(settings, signer.clone())
                    .map(|s| Box::new(s) as Box<dyn Sink>)
                    .map_err(|e| AgentError::Sink {
                        sink: "https",
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        match (f.strategy, mqtt, https) {
            (Strategy::MqttThenHttps, Some(m), Some(h)) => {
                Some(Box::new(Fallback::new(m, h, f.fallback_after)))
            }
            (Strategy::HttpsThenMqtt, Some(m), Some(h)) => {
                Some(Box::new(Fallback::new(h, m, f.fallback_after)))
            }
            (Strategy::Both, Some(m), Some(h)) => Some(Box::new(Both::new(m, h))),
            (Strategy::Https, _, Some(h)) => Some(h),
            (_, Some(m), _) => Some(m),
            (_, None, h) => h,
        }
    };
    Ok(match (network, console) {
        (Some(n), Some(c)) => Some(Box::new(Both::new(n, c))),
        (n, c) => n.or(c),
    })
}

/// The rules' view of a profile's tags.
pub fn rule_tags(profile: &Profile) -> Vec<RuleTag> {
    profile
        .tags
        .iter()
        .map(|t| RuleTag {
            name: t.name.clone(),
            role: t.role,
            unit: t.unit.clone(),
            states: t.states.clone(),
            limits: t.limits.map(|l| (l.min, l.max)),
            rules: t.rules.clone(),
        })
        .collect()
}

/// A station's rules as its station task builds them before loading the stored baseline:
/// the profile's tags and rule settings, the catalogue's severities. For tools and tests
/// that drive a source and its rules themselves.
pub fn rules_for(gateway: &str, station: &StationConfig) -> StationRules {
    StationRules::new(
        Arc::from(gateway),
        Arc::from(station.id.as_str()),
        Arc::new(SeverityMap::default()),
        rule_tags(&station.profile),
    )
    .with_settings(station.rule_settings())
}

/// Polls one station until cancelled. Events the queue refused are kept (bounded) and
/// retried on the next poll; what exceeds the bound is counted and logged, never silent.
async fn run_station(
    (station, tags): (StationConfig, Arc<RuleTags>),
    mut source: Source,
    gateway: Arc<str>,
    severities: Arc<SeverityMap>,
    queue: Queue,
    shutdown: CancellationToken,
    (counters, beat): (StationMetrics, Heartbeat),
) -> StationOutcome {
    let mut rules = StationRules::shared(gateway, Arc::from(station.id.as_str()), severities, tags)
        .with_settings(station.rule_settings());
    // The baseline learned before a restart: no re-alarm, and changes made meanwhile show.
    let state_key = format!("station/{}", station.id);
    match queue.load_state(&state_key) {
        Ok(Some(bytes)) => match Baseline::from_bytes(&bytes) {
            Ok(baseline) => rules = rules.with_baseline(baseline),
            Err(e) => tracing::warn!(station = %station.id, error = %e,
                "stored baseline unusable; learning it again"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(station = %station.id, error = %e,
            "stored baseline unreadable; learning it again"),
    }
    let mut ticker = tokio::time::interval(station.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Polling never waits for a commit: appends are submitted and confirmed in the
    // background (see `outbox`), in order.
    let mut outbox = Outbox::new(STATION_PENDING_MAX);
    let mut confirmations: VecDeque<Confirmation> = VecDeque::new();
    let mut outcome = StationOutcome::default();
    let drop_excess = |outcome: &mut StationOutcome, excess: usize| {
        if excess > 0 {
            outcome.dropped_unconfirmed += excess as u64;
            counters.dropped_unconfirmed(excess);
            tracing::error!(station = %station.id, dropped = excess,
                "events dropped: the buffer has refused appends for too long");
        }
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let started = std::time::Instant::now();
                let poll = source.poll().await;
                let latency = started.elapsed();
                beat.beat();
                outcome.readings += poll.readings.len() as u64;
                for error in &poll.errors {
                    tracing::debug!(station = %station.id, %error, "poll error");
                }
                let events = rules.observe(&poll, Timestamp::now());
                outcome.events += events.len() as u64;
                counters.record_poll(
                    latency,
                    poll.errors.len(),
                    poll.readings.len(),
                    events.len(),
                );
                outbox.add(events, rules.take_state());
            }
            Some(result) = next_confirmation(&mut confirmations) => {
                confirmations.pop_front();
                if let Err(e) = &result {
                    tracing::error!(station = %station.id, error = %e, pending = outbox.pending(),
                        "buffer refused events; keeping them for the next poll");
                }
                let excess = outbox.confirmed(result.is_ok());
                drop_excess(&mut outcome, excess);
            }
            () = shutdown.cancelled() => break,
        }
        while let Some(send) = outbox.next() {
            let state = send.state.clone().map(|bytes| (state_key.clone(), bytes));
            match queue.submit(&send.events, state, send.commit).await {
                Ok(confirmation) => {
                    confirmations.push_back(confirmation);
                    outbox.sent(send);
                }
                Err(e) => {
                    tracing::error!(station = %station.id, error = %e, pending = send.events.len(),
                        "buffer refused events; keeping them for the next poll");
                    let excess = outbox.refused(send);
                    drop_excess(&mut outcome, excess);
                    break;
                }
            }
        }
    }
    finish_appends(
        &station.id,
        &queue,
        &state_key,
        (&mut outbox, confirmations),
        (&mut outcome, &counters),
    )
    .await;
    beat.retire();
    outcome
}

/// On the way out: what waits for a shared commit is committed now, then the rest goes in
/// one last append, committed at once; what still fails is counted and reported.
async fn finish_appends(
    station: &str,
    queue: &Queue,
    state_key: &str,
    (outbox, mut confirmations): (&mut Outbox, VecDeque<Confirmation>),
    (outcome, counters): (&mut StationOutcome, &StationMetrics),
) {
    if !confirmations.is_empty() {
        if let Err(e) = queue.flush().await {
            tracing::debug!(station, error = %e, "flush at shutdown failed");
        }
    }
    while let Some(confirmation) = confirmations.pop_front() {
        let excess = outbox.confirmed(confirmation.await.is_ok());
        if excess > 0 {
            outcome.dropped_unconfirmed += excess as u64;
            counters.dropped_unconfirmed(excess);
            tracing::error!(
                station,
                dropped = excess,
                "events dropped: the buffer has refused appends for too long"
            );
        }
    }
    if let Some(last) = outbox.last() {
        let state = last.state.map(|bytes| (state_key.to_owned(), bytes));
        let result = match queue.submit(&last.events, state, last.commit).await {
            Ok(confirmation) => confirmation.await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            outcome.dropped_unconfirmed += last.events.len() as u64;
            counters.dropped_unconfirmed(last.events.len());
            tracing::error!(station, error = %e, dropped = last.events.len(),
                "events lost at shutdown: the buffer refused them");
        }
    }
}

/// The oldest confirmation's answer; never resolves while none is awaited.
async fn next_confirmation(
    confirmations: &mut VecDeque<Confirmation>,
) -> Option<Result<Vec<u64>, QueueError>> {
    match confirmations.front_mut() {
        Some(confirmation) => Some(confirmation.await),
        None => std::future::pending().await,
    }
}
