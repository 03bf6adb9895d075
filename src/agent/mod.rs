//! The agent: wires source -> rules -> buffer -> forward for every configured station and
//! runs until shut down.
//!
//! One task per station polls its source, runs that station's rules and appends the events;
//! stations share nothing but the queue, so one slow station never delays another. Shutdown
//! order: stop polling, let every station finish its in-flight append, record
//! `agent.stopped`, give forwarders a bounded grace period, then commit and close the queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::buffer::{OpenError, Queue, QueueError, QueueOptions};
use crate::config::{Config, StationConfig};
use crate::event::Timestamp;
use crate::event::{SecurityEvent, SeverityMap};
use crate::forward::{ConsoleFormat, ConsoleSink, ForwardCounters, Forwarder};
use crate::rules::{Baseline, RuleTag, StationRules};
use crate::source::{Source, SourceContext, SourceError};

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
}

/// Choices the command line makes on top of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
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
}

#[derive(Debug, Default)]
struct StationOutcome {
    readings: u64,
    events: u64,
    dropped_unconfirmed: u64,
}

/// Builds the queue options from the validated config.
pub fn queue_options(config: &Config) -> QueueOptions {
    let b = &config.buffer;
    QueueOptions {
        quota_bytes: b.quota_bytes,
        commit_max_events: b.commit_max_events,
        commit_linger: b.commit_linger,
        high_watermark_percent: b.high_watermark_percent,
        drop_report_interval: b.drop_report_interval,
        max_event_bytes: b.max_event_bytes,
        ..QueueOptions::new(&config.agent.data_dir, &config.agent.gateway_id)
    }
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunSummary, AgentError> {
    check_supported(&config)?;
    // Every source is built before anything starts, so a bad one stops the start-up.
    let mut sources = Vec::new();
    for (i, station) in config.stations.iter().filter(|s| s.enabled).enumerate() {
        let source = Source::for_station(
            station,
            &SourceContext {
                data_dir: config.agent.data_dir.clone(),
                gateway_id: config.agent.gateway_id.clone(),
                seed: i as u64 + 1,
            },
        )
        .map_err(|reason| AgentError::Source {
            station: station.id.clone(),
            reason,
        })?;
        sources.push((station.clone(), source));
    }
    let (queue, report) = Queue::open(queue_options(&config))?;
    tracing::info!(store = %queue.path().display(), depth = report.depth, next_seq = report.next_seq,
        "buffer open");
    let gateway: Arc<str> = Arc::from(config.agent.gateway_id.as_str());
    let severities = Arc::new(config.severity.clone());

    queue
        .append(&[lifecycle(&config, "agent.started")
            .data("version", env!("CARGO_PKG_VERSION"))
            .data("stations", config.stations.len())
            .data("buffered_at_start", report.depth)])
        .await?;

    let polling = shutdown.child_token();
    let mut stations = JoinSet::new();
    let count = sources.len();
    for (station, source) in sources {
        stations.spawn(run_station(
            station,
            source,
            gateway.clone(),
            severities.clone(),
            queue.clone(),
            polling.clone(),
        ));
    }
    tracing::info!(stations = count, gateway = %gateway, "agent running");

    let forwarding = CancellationToken::new();
    let console = options
        .console
        .or(config.forward.console.then_some(ConsoleFormat::Json));
    let grace = config.agent.shutdown_grace;
    let forwarder = console.map(|format| {
        tokio::spawn(
            Forwarder::new(queue.clone(), ConsoleSink::new(format), 500)
                .run(forwarding.clone(), grace),
        )
    });

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping polls");
    polling.cancel();
    let mut summary = RunSummary {
        stations: count,
        ..RunSummary::default()
    };
    while let Some(done) = stations.join_next().await {
        if let Ok(outcome) = done {
            summary.readings += outcome.readings;
            summary.events += outcome.events;
            summary.dropped_unconfirmed += outcome.dropped_unconfirmed;
        }
    }
    queue
        .append(&[lifecycle(&config, "agent.stopped")
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
    summary.buffered = queue.stats().depth;
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

fn lifecycle(config: &Config, event_type: &str) -> SecurityEvent {
    SecurityEvent::new(config.agent.gateway_id.as_str(), event_type)
        .severity(config.severity.severity_of(event_type))
        .data("config_digest", config.digest.clone())
        .context("source", "agent")
        .context("site", config.agent.site.clone())
}

/// Refuses, before anything starts, a forwarder this build cannot run.
fn check_supported(config: &Config) -> Result<(), AgentError> {
    if config.forward.mqtt.is_some() {
        return Err(AgentError::UnsupportedSink("mqtt"));
    }
    if config.forward.https.is_some() {
        return Err(AgentError::UnsupportedSink("https"));
    }
    Ok(())
}

/// The rules' view of a station's tags.
pub fn rule_tags(station: &StationConfig) -> Vec<RuleTag> {
    station
        .profile
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

/// Polls one station until cancelled. Events the queue refused are kept (bounded) and
/// retried on the next poll; what exceeds the bound is counted and logged, never silent.
async fn run_station(
    station: StationConfig,
    mut source: Source,
    gateway: Arc<str>,
    severities: Arc<SeverityMap>,
    queue: Queue,
    shutdown: CancellationToken,
) -> StationOutcome {
    let mut rules = StationRules::new(
        gateway,
        Arc::from(station.id.as_str()),
        severities,
        rule_tags(&station),
    )
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
    let mut pending_state: Option<Vec<u8>> = None;
    let mut ticker = tokio::time::interval(station.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Vec<SecurityEvent> = Vec::new();
    let mut outcome = StationOutcome::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let poll = source.poll().await;
        outcome.readings += poll.readings.len() as u64;
        for error in &poll.errors {
            tracing::debug!(station = %station.id, %error, "poll error");
        }
        let events = rules.observe(&poll, Timestamp::now());
        outcome.events += events.len() as u64;
        pending.extend(events);
        if let Some(state) = rules.take_state() {
            pending_state = Some(state);
        }
        if pending.is_empty() && pending_state.is_none() {
            continue;
        }
        let state = pending_state
            .clone()
            .map(|bytes| (state_key.clone(), bytes));
        match queue.append_with_state(&pending, state).await {
            Ok(_) => {
                pending.clear();
                pending_state = None;
            }
            Err(e) => {
                tracing::error!(station = %station.id, error = %e, pending = pending.len(),
                    "buffer refused events; keeping them for the next poll");
                if pending.len() > STATION_PENDING_MAX {
                    let excess = pending.len() - STATION_PENDING_MAX;
                    pending.drain(..excess);
                    outcome.dropped_unconfirmed += excess as u64;
                    tracing::error!(station = %station.id, dropped = excess,
                        "events dropped: the buffer has refused appends for too long");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if !pending.is_empty() || pending_state.is_some() {
        // Last try on the way out; what still fails is reported.
        let state = pending_state.map(|bytes| (state_key.clone(), bytes));
        if let Err(e) = queue.append_with_state(&pending, state).await {
            outcome.dropped_unconfirmed += pending.len() as u64;
            tracing::error!(station = %station.id, error = %e, dropped = pending.len(),
                "events lost at shutdown: the buffer refused them");
        }
    }
    outcome
}
